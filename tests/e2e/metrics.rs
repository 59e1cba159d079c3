//! `GET /metrics`: what a scrape shows after real senders talk to the node.
//! `/metrics` is admin-only, so [`scrape`] sends an admin token.

use crate::helpers::*;

/// The exposition and its content type.
async fn scrape(app: &TestApp) -> (String, String) {
    let response = app
        .client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.expect("body");
    // Every sample names the node; the series below are written without it.
    assert!(
        text.contains("radstream_database_up{node=\""),
        "no node label: {text}"
    );
    (without_node_label(&text), content_type)
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("numeric sample"))
    })
}

async fn metrics_after_traffic(db: Db) {
    let app = TestApp::spawn(db).await;
    let (before, content_type) = scrape(&app).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(
        sample(&before, "radstream_dicom_instances_stored_total"),
        Some(0.0)
    );

    let dir = tempfile::tempdir().unwrap();
    let (studies, paths) = write_studies(dir.path(), 1, 3, 64);
    let port = app.dicom_port();
    storescu(&app, &paths).await;
    let (ok, out) = run_async("echoscu", &["-aec", "WRONG", "127.0.0.1", &port]).await;
    assert!(!ok, "a wrong called AE title was accepted: {out}");
    app.wait_complete(&studies[0], 10).await;

    // A request whose path holds a UID: only its template (or `unmatched`) may show.
    let _ = reqwest::get(app.url(&format!("/studies/{}", studies[0]))).await;
    let _ = reqwest::get(app.url("/health")).await.expect("GET /health");

    let (text, _) = scrape(&app).await;
    let stored_bytes = app
        .count("SELECT CAST(SUM(file_size) AS BIGINT) FROM instances")
        .await;
    assert!(stored_bytes > 0);
    let expect = [
        ("radstream_dicom_instances_stored_total", 3.0),
        ("radstream_dicom_stored_bytes_total", stored_bytes as f64),
        ("radstream_dicom_associations_accepted_total", 1.0),
        (
            "radstream_dicom_associations_rejected_total{reason=\"called_ae_not_recognized\"}",
            1.0,
        ),
        ("radstream_dicom_associations_open", 0.0),
        ("radstream_studies_receiving", 0.0),
        ("radstream_database_up", 1.0),
        (
            "radstream_http_requests_total{method=\"GET\",route=\"/health\",status=\"2xx\"}",
            1.0,
        ),
        (
            "radstream_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"2xx\"}",
            1.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(
        sample(&text, "radstream_jobs{state=\"queued\"}").is_some(),
        "{text}"
    );
    assert!(
        !text.contains(&studies[0]),
        "a raw path leaked into a label:\n{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

on_both_databases!(metrics_count_stored_instances_bytes_associations_and_requests => metrics_after_traffic);
