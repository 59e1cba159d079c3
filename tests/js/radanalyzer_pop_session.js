const API_BASE = "https://api.radanalyzer.com";
const headers = {
  "x-api-key": "YOUR_API_KEY",
  "Content-Type": "application/json"
};

// Step 1: Start a PoP session
const startRes = await fetch(`${API_BASE}/v3/pop-session/start`, {
  method: "POST",
  headers,
  body: JSON.stringify({})
});
const { session_id } = await startRes.json();

// Step 2: Send frames until session completes
let sessionComplete = false;
while (!sessionComplete) {
  const frameBase64 = await captureFrame(); // your capture function

  const frameRes = await fetch(`${API_BASE}/v3/pop-session`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      image: frameBase64,
      session_id: session_id,
      uuid: "patient-123"
    })
  });

  const result = await frameRes.json();

  if (result.session_status === "complete") {
    console.log("VHS:", result.prediction.vhs);
    console.log("VLAS:", result.prediction.vlas);
    sessionComplete = true;
  } else if (result.session_status === "failed") {
    console.error("Session failed:", result.error);
    sessionComplete = true;
  } else {
    console.log("Feedback:", result.feedback);
    // Show feedback to user, capture another frame
  }
}
