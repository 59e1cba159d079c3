//! MPPS from pynetdicom as the modality: a COMPLETED step completes its study as soon as the
//! last instance it lists arrives (long before the quiet window would), a DISCONTINUED step
//! completes what arrived, refusals carry the PS3.4 statuses, and a study without MPPS keeps
//! the release+quiet rule.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::helpers::*;

/// `PORT create STEP STUDY` sends N-CREATE (IN PROGRESS); `PORT set STEP STUDY STATUS
/// SERIES [SOP...]` sends N-SET with the status and a Performed Series Sequence listing the
/// SOP instances. Prints the response status as four hex digits.
const MPPS_SCU: &str = r#"
import sys
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep
port, op, step, study = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ae = AE(ae_title="MODALITY")
ae.add_requested_context(ModalityPerformedProcedureStep)
assoc = ae.associate("127.0.0.1", port, ae_title="RADSTREAM")
if not assoc.is_established:
    sys.exit(2)
ds = Dataset()
if op == "create":
    sched = Dataset()
    sched.StudyInstanceUID = study
    sched.AccessionNumber = "ACC1"
    sched.RequestedProcedureID = "RP1"
    sched.ScheduledProcedureStepID = "SPS1"
    ds.ScheduledStepAttributesSequence = [sched]
    ds.PatientName = "TEST^PHANTOM"
    ds.PatientID = "PID-TEST-1"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedProcedureStepStartDate = "20261122"
    ds.PerformedProcedureStepStartTime = "120000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "DX"
    ds.PerformedSeriesSequence = []
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, step)
else:
    ds.PerformedProcedureStepStatus = sys.argv[5]
    ds.PerformedProcedureStepEndDate = "20261122"
    ds.PerformedProcedureStepEndTime = "120500"
    series = Dataset()
    series.SeriesInstanceUID = sys.argv[6]
    series.Modality = "DX"
    series.PerformingPhysicianName = ""
    series.OperatorsName = ""
    series.ProtocolName = "CHEST PA"
    series.RetrieveAETitle = ""
    series.SeriesDescription = ""
    refs = []
    for sop in sys.argv[7:]:
        r = Dataset()
        r.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        r.ReferencedSOPInstanceUID = sop
        refs.append(r)
    series.ReferencedImageSequence = refs
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds.PerformedSeriesSequence = [series]
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, step)
assoc.release()
print("%04X" % status.Status if "Status" in status else "NONE", flush=True)
"#;

/// Runs one MPPS request and returns the response status.
async fn mpps(app: &TestApp, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(MPPS_SCU)
        .arg(app.dicom_port())
        .args(args)
        .output()
        .await
        .expect("python venv with pynetdicom (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "MPPS SCU failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Study {
    uid: String,
    series: String,
    sops: Vec<String>,
    files: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

fn study(instances: usize) -> Study {
    let dir = tempfile::tempdir().unwrap();
    let uid = new_uid();
    let series = new_uid();
    let sops: Vec<String> = (0..instances).map(|_| new_uid()).collect();
    let files = sops
        .iter()
        .map(|sop| write_dx(dir.path(), &uid, &series, sop, 32, 32))
        .collect();
    Study {
        uid,
        series,
        sops,
        files,
        _dir: dir,
    }
}

async fn status_of(app: &TestApp, study_uid: &str) -> String {
    sqlx::query_scalar("SELECT status FROM studies WHERE study_uid = $1")
        .bind(study_uid)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn completion_event(app: &TestApp, study_uid: &str) -> serde_json::Value {
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE type = 'study.complete' AND study_uid = $1",
    )
    .bind(study_uid)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(payloads.len(), 1, "one study.complete event");
    serde_json::from_str(&payloads[0]).unwrap()
}

/// A long quiet window and stable age: only MPPS can complete the study within seconds.
fn slow_timers(s: &mut radstream::configuration::Settings) {
    s.study.quiet_window_ms = 60_000;
    s.study.stable_age_secs = 120;
    s.pipeline.enabled = false;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_step_completes_the_study_when_its_last_listed_instance_arrives() {
    let app = TestApp::spawn_with(Db::Sqlite, slow_timers).await;
    let s = study(2);
    let step = new_uid();
    assert_eq!(mpps(&app, &["create", &step, &s.uid]).await, "0000");
    assert_eq!(
        mpps(&app, &["create", &step, &s.uid]).await,
        "0111",
        "a second N-CREATE of the same step is a duplicate"
    );
    storescu(&app, &s.files[..1]).await;
    let mut set = vec!["set", &step, &s.uid, "COMPLETED", &s.series];
    set.extend(s.sops.iter().map(String::as_str));
    assert_eq!(mpps(&app, &set).await, "0000");
    // The evidence is checked before the N-SET is answered: one listed instance is missing.
    assert_eq!(status_of(&app, &s.uid).await, "receiving");

    let sent = Instant::now();
    storescu(&app, &s.files[1..]).await;
    app.wait_complete(&s.uid, 10).await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "completed {took:?} after the last instance, the quiet window is 60 s"
    );
    let event = completion_event(&app, &s.uid).await;
    assert_eq!(event["completed_by"], "mpps", "{event}");
    assert_eq!(event["num_instances"], 2, "{event}");
    let (code, body) = app.get_json(&format!("/v1/studies/{}", s.uid)).await;
    assert_eq!(code, 200);
    assert_eq!(body["data"]["completed_by"], "mpps", "{body}");

    // A COMPLETED step may no longer be updated; an unknown step does not exist.
    assert_eq!(mpps(&app, &set).await, "0110");
    let unknown = new_uid();
    assert_eq!(
        mpps(&app, &["set", &unknown, &s.uid, "COMPLETED", &s.series]).await,
        "0112"
    );
    assert_eq!(
        mpps(&app, &["set", &step, &s.uid, "FINISHED", &s.series]).await,
        "0106",
        "not a status value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discontinued_step_completes_what_arrived() {
    let app = TestApp::spawn_with(Db::Postgres, slow_timers).await;
    let s = study(3);
    let step = new_uid();
    assert_eq!(mpps(&app, &["create", &step, &s.uid]).await, "0000");
    storescu(&app, &s.files[..2]).await;
    // The association was released, but the quiet window (60 s) is far away, and an open
    // step holds the study anyway.
    assert_eq!(status_of(&app, &s.uid).await, "receiving");
    assert_eq!(
        mpps(&app, &["set", &step, &s.uid, "DISCONTINUED", &s.series]).await,
        "0000"
    );
    assert_eq!(
        status_of(&app, &s.uid).await,
        "complete",
        "completed before the N-SET was answered"
    );
    let event = completion_event(&app, &s.uid).await;
    assert_eq!(event["completed_by"], "mpps", "{event}");
    assert_eq!(event["num_instances"], 2, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_step_holds_the_quiet_window_and_a_study_without_mpps_keeps_it() {
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        s.study.quiet_window_ms = 200;
        s.study.stable_age_secs = 120;
        s.pipeline.enabled = false;
    })
    .await;
    let plain = study(1);
    let with_step = study(1);
    let step = new_uid();
    assert_eq!(mpps(&app, &["create", &step, &with_step.uid]).await, "0000");
    storescu(&app, &with_step.files).await;
    storescu(&app, &plain.files).await;
    app.wait_complete(&plain.uid, 10).await;
    let event = completion_event(&app, &plain.uid).await;
    assert_eq!(event["completed_by"], "release+quiet", "{event}");
    // The plain study was sent after and has completed by its quiet window: the quiet
    // window of the study with an open step has passed too, without completing it.
    assert_eq!(status_of(&app, &with_step.uid).await, "receiving");
    let mut set = vec!["set", &step, &with_step.uid, "COMPLETED", &with_step.series];
    set.extend(with_step.sops.iter().map(String::as_str));
    assert_eq!(mpps(&app, &set).await, "0000");
    assert_eq!(status_of(&app, &with_step.uid).await, "complete");
    let event = completion_event(&app, &with_step.uid).await;
    assert_eq!(event["completed_by"], "mpps", "{event}");
}

/// A RIS (pynetdicom MPPS SCP): prints "listening PORT", then one line per request it gets:
/// `N-CREATE <step> <status>` or `N-SET <step> <status> <listed instances>`.
const MPPS_RIS: &str = r#"
import time
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep
def on_create(event):
    ds = event.attribute_list
    print("N-CREATE", event.request.AffectedSOPInstanceUID, ds.PerformedProcedureStepStatus.replace(" ", "_"), flush=True)
    return 0x0000, ds
def on_set(event):
    ds = event.attribute_list
    n = sum(len(s.ReferencedImageSequence) for s in ds.PerformedSeriesSequence)
    print("N-SET", event.request.RequestedSOPInstanceUID, ds.PerformedProcedureStepStatus, n, flush=True)
    return 0x0000, ds
ae = AE(ae_title="RIS")
ae.add_supported_context(ModalityPerformedProcedureStep)
server = ae.start_server(("127.0.0.1", 0), block=False,
    evt_handlers=[(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set)])
print("listening", server.socket.getsockname()[1], flush=True)
while True:
    time.sleep(1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_are_forwarded_to_the_ris_in_order() {
    use std::io::BufRead;
    let mut ris = std::process::Command::new(python())
        .arg("-c")
        .arg(MPPS_RIS)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python venv with pynetdicom (scripts/setup.sh)");
    let mut lines = std::io::BufReader::new(ris.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let port: u16 = first
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("RIS said {first:?}"));
    let _ris = Peer(ris);
    let app = TestApp::spawn_with(Db::Sqlite, |s| {
        slow_timers(s);
        s.mpps.forward = Some(format!("RIS@127.0.0.1:{port}"));
    })
    .await;
    let s = study(2);
    let step = new_uid();
    assert_eq!(mpps(&app, &["create", &step, &s.uid]).await, "0000");
    let mut set = vec!["set", &step, &s.uid, "COMPLETED", &s.series];
    set.extend(s.sops.iter().map(String::as_str));
    assert_eq!(mpps(&app, &set).await, "0000");
    let got = tokio::task::spawn_blocking(move || {
        lines
            .by_ref()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let got = tokio::time::timeout(Duration::from_secs(60), got)
        .await
        .expect("the RIS got both within 60 s")
        .unwrap();
    assert_eq!(
        got,
        [
            format!("N-CREATE {step} IN_PROGRESS"),
            format!("N-SET {step} COMPLETED 2")
        ]
    );
}
