//! Prometheus metrics: one registry per node, no global state (several nodes can run in one
//! test process).
//!
//! [`Metrics`] is a cheap-to-clone handle. The ingest side, the pipeline, the event bus and
//! the HTTP layer record into it as things happen; [`Metrics::render`] writes the OpenMetrics
//! text exposition, adding the gauges that describe state (queue depth, studies still
//! receiving, open associations), which are read from the database at scrape time so they
//! cannot drift from the truth.
//!
//! Every name starts with `radstream_` and carries its unit (`_seconds`, `_bytes`); counters
//! end in `_total`. Label values come from small fixed sets (route templates, never raw paths;
//! DIMSE status codes; outcomes), so the number of series stays bounded.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::clock::now_ms;

/// Content type of [`Metrics::render`]'s output (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the database before leaving its gauges out.
const DB_TIMEOUT: Duration = Duration::from_secs(3);

/// HTTP request latency: 1 ms to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Study complete to inference start: milliseconds when idle, minutes under a backlog.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// One inference job: tens of milliseconds on a GPU to about 30 s on a busy CPU.
const INFERENCE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// First instance received to result stored: includes the study quiet window (seconds).
const RECEIPT_TO_RESULT_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    1800.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PredictionLabels {
    model: String,
    label: String,
    present: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: &'static str,
}

/// Builds histograms with fixed buckets inside a [`Family`].
#[derive(Clone, Copy, Debug)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The event-driven metrics; registered once, in [`Metrics::new`].
#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// The `node` label every sample carries (several nodes scraped into one Prometheus).
    node: Option<String>,
    instances_stored: Counter,
    stored_bytes: Counter,
    store_failures: Family<StatusLabel, Counter>,
    associations_accepted: Counter,
    associations_rejected: Family<ReasonLabel, Counter>,
    queue_wait: Histogram,
    inference: Histogram,
    receipt_to_result: Histogram,
    jobs_finished: Family<OutcomeLabel, Counter>,
    predictions: Family<PredictionLabels, Counter>,
    sse_subscribers: Gauge,
    events_published: Family<KindLabel, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<HttpLabels, Histogram, Buckets>,
    /// The object store's request counts, read at scrape time (`storage.backend = "s3"`).
    object_store: std::sync::OnceLock<RequestCounts>,
}

/// Reads `(operation, requests so far)` pairs.
struct RequestCounts(Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>);

impl std::fmt::Debug for RequestCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestCounts")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// A node's metrics. Clones share the same registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Keeps `radstream_sse_subscribers` one higher while it lives; hold it in the SSE stream.
#[must_use = "the subscriber gauge goes back down as soon as the guard is dropped"]
#[derive(Debug)]
pub struct SseGuard {
    gauge: Gauge,
}

impl Drop for SseGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram(buckets: &[f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

impl Metrics {
    /// A fresh registry with every metric registered (and at zero).
    pub fn new() -> Metrics {
        Self::build(None)
    }

    /// [`Metrics::new`] with a `node="<id>"` label on every sample.
    pub fn for_node(node_id: &str) -> Metrics {
        Self::build(Some(node_id.to_string()))
    }

    fn registry(node: &Option<String>) -> Registry {
        match node {
            Some(id) => Registry::with_prefix_and_labels(
                "radstream",
                [(
                    std::borrow::Cow::Borrowed("node"),
                    std::borrow::Cow::Owned(id.clone()),
                )]
                .into_iter(),
            ),
            None => Registry::with_prefix("radstream"),
        }
    }

    fn build(node: Option<String>) -> Metrics {
        let mut r = Self::registry(&node);
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        r.register("build", "Version of this node", build);

        let instances_stored = Counter::default();
        r.register(
            "dicom_instances_stored",
            "C-STORE requests answered Success (a duplicate that was kept included)",
            instances_stored.clone(),
        );
        let stored_bytes = Counter::default();
        r.register_with_unit(
            "dicom_stored",
            "Bytes received for those instances (the Part 10 file written: file meta and data set)",
            Unit::Bytes,
            stored_bytes.clone(),
        );
        let store_failures = Family::default();
        r.register(
            "dicom_store_failures",
            "C-STORE requests answered with a failure, by DIMSE status (hex)",
            store_failures.clone(),
        );
        let associations_accepted = Counter::default();
        r.register(
            "dicom_associations_accepted",
            "DICOM associations established",
            associations_accepted.clone(),
        );
        let associations_rejected = Family::default();
        r.register(
            "dicom_associations_rejected",
            "DICOM connections that did not become an association, by reason",
            associations_rejected.clone(),
        );

        let queue_wait = histogram(QUEUE_WAIT_BUCKETS);
        r.register_with_unit(
            "job_queue_wait",
            "Time from study complete to inference start",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let inference = histogram(INFERENCE_BUCKETS);
        r.register_with_unit(
            "inference_duration",
            "Inference time of one job",
            Unit::Seconds,
            inference.clone(),
        );
        let receipt_to_result = histogram(RECEIPT_TO_RESULT_BUCKETS);
        r.register_with_unit(
            "receipt_to_result",
            "Time from the first instance of a study received to its result stored",
            Unit::Seconds,
            receipt_to_result.clone(),
        );
        let jobs_finished = Family::default();
        r.register(
            "jobs_finished",
            "Job attempts ended, by outcome (succeeded, retried, failed)",
            jobs_finished.clone(),
        );
        let predictions = Family::default();
        r.register(
            "predictions",
            "Findings reported, by model, label and whether the finding is present",
            predictions.clone(),
        );

        let sse_subscribers = Gauge::default();
        r.register(
            "sse_subscribers",
            "Server-sent event streams open",
            sse_subscribers.clone(),
        );
        let events_published = Family::default();
        r.register(
            "events_published",
            "Events published, by kind",
            events_published.clone(),
        );

        let http_requests = Family::default();
        r.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status class",
            http_requests.clone(),
        );
        let http_duration = Family::new_with_constructor(Buckets(HTTP_BUCKETS));
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (to the response head; streams not included)",
            Unit::Seconds,
            http_duration.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                node,
                instances_stored,
                stored_bytes,
                store_failures,
                associations_accepted,
                associations_rejected,
                queue_wait,
                inference,
                receipt_to_result,
                jobs_finished,
                predictions,
                sse_subscribers,
                events_published,
                http_requests,
                http_duration,
                object_store: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Publishes the object store's request counts as `radstream_object_store_requests_total`
    /// (by operation), read from `counts` at each scrape; set once, at start.
    pub fn watch_object_store(
        &self,
        counts: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    ) {
        let _ = self.inner.object_store.set(RequestCounts(Box::new(counts)));
    }

    // ---- ingest ----

    /// A C-STORE answered Success; `bytes` is the size of its data set.
    pub fn instance_stored(&self, bytes: u64) {
        self.inner.instances_stored.inc();
        self.inner.stored_bytes.inc_by(bytes);
    }

    /// A C-STORE answered with failure `status` (labelled in hex, e.g. `A700`).
    pub fn store_failed(&self, status: u16) {
        self.inner
            .store_failures
            .get_or_create(&StatusLabel {
                status: format!("{status:04X}"),
            })
            .inc();
    }

    /// An association was established.
    pub fn association_accepted(&self) {
        self.inner.associations_accepted.inc();
    }

    /// A connection did not become an association. `reason` should come from a small fixed
    /// set (e.g. `calling_ae_not_recognized`, `association_limit`): it is a label.
    pub fn association_rejected(&self, reason: &str) {
        self.inner
            .associations_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    // ---- pipeline ----

    /// Study complete to inference start.
    pub fn observe_queue_wait(&self, secs: f64) {
        self.inner.queue_wait.observe(secs);
    }

    /// Inference duration of one job.
    pub fn observe_inference(&self, secs: f64) {
        self.inner.inference.observe(secs);
    }

    /// First instance received to result stored.
    pub fn observe_receipt_to_result(&self, secs: f64) {
        self.inner.receipt_to_result.observe(secs);
    }

    /// A job attempt ended: `"succeeded"`, `"retried"` or `"failed"`.
    pub fn job_finished(&self, outcome: &str) {
        self.inner
            .jobs_finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One finding of one model for one study: `present` is the thresholded decision.
    pub fn prediction(&self, model: &str, label: &str, present: bool) {
        self.inner
            .predictions
            .get_or_create(&PredictionLabels {
                model: model.to_string(),
                label: label.to_string(),
                present,
            })
            .inc();
    }

    // ---- events ----

    /// An SSE stream opened; the gauge goes back down when the guard is dropped.
    pub fn sse_subscriber_opened(&self) -> SseGuard {
        let gauge = self.inner.sse_subscribers.clone();
        gauge.inc();
        SseGuard { gauge }
    }

    /// An event of `kind` (e.g. `job.succeeded`) was published.
    pub fn event_published(&self, kind: &str) {
        self.inner
            .events_published
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    // ---- HTTP ----

    /// One HTTP request answered. `route` is the matched route template (`None` when no route
    /// matched, labelled `unmatched`): never pass the raw path, it holds UIDs.
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, secs: f64) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.unwrap_or("unmatched").to_string(),
            status: status_class(status),
        };
        self.inner
            .http_duration
            .get_or_create(&labels)
            .observe(secs);
        self.inner.http_requests.get_or_create(&labels).inc();
    }

    // ---- rendering ----

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]): the recorded metrics, plus gauges
    /// read now: jobs queued and running, the age of the oldest queued job, studies still
    /// receiving, and `open_associations`. When the database does not answer (within a few
    /// seconds) its gauges are left out and `radstream_database_up` is 0.
    /// The exposition; `db_state` reads the queue and study gauges (from above this module:
    /// the store's events report to these metrics), given [`DB_TIMEOUT`] to answer.
    pub async fn render(
        &self,
        db_state: impl std::future::Future<Output = Result<DbState, sqlx::Error>>,
        open_associations: usize,
    ) -> String {
        let mut now = Self::registry(&self.inner.node);
        let open = Gauge::<i64>::default();
        open.set(i64::try_from(open_associations).unwrap_or(i64::MAX));
        now.register(
            "dicom_associations_open",
            "DICOM associations being served",
            open,
        );
        let up = Gauge::<i64>::default();
        match tokio::time::timeout(DB_TIMEOUT, db_state).await {
            Ok(Ok(state)) => {
                up.set(1);
                state.register(&mut now);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the queue state"),
            Err(_) => tracing::warn!("metrics: the database did not answer in time"),
        }
        now.register(
            "database_up",
            "1 when this scrape could read the queue and study gauges from the database",
            up,
        );

        if let Some(counts) = self.inner.object_store.get() {
            let requests = Family::<OperationLabel, Counter>::default();
            for (operation, n) in (counts.0)() {
                requests
                    .get_or_create(&OperationLabel { operation })
                    .inc_by(n);
            }
            now.register(
                "object_store_requests",
                "Requests made to the object store, by operation (multipart: its create and complete)",
                requests,
            );
        }

        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.inner.registry);
        let _ = encode_registry(&mut out, &now);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Gauges describing the database's state at scrape time.
pub struct DbState {
    pub queued: i64,
    pub running: i64,
    /// Epoch milliseconds the oldest queued job was created.
    pub oldest_queued_ms: Option<i64>,
    /// Studies still receiving.
    pub receiving: i64,
}

impl DbState {
    fn register(self, r: &mut Registry) {
        let jobs = Family::<StateLabel, Gauge>::default();
        jobs.get_or_create(&StateLabel { state: "queued" })
            .set(self.queued);
        jobs.get_or_create(&StateLabel { state: "running" })
            .set(self.running);
        r.register("jobs", "Jobs waiting or being worked on, by state", jobs);
        let age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        if let Some(created) = self.oldest_queued_ms {
            age.set((now_ms() - created).max(0) as f64 / 1000.0);
        }
        r.register_with_unit(
            "jobs_oldest_queued_age",
            "Age of the oldest queued job (0 when none is queued)",
            Unit::Seconds,
            age,
        );
        let receiving = Gauge::<i64>::default();
        receiving.set(self.receiving);
        r.register(
            "studies_receiving",
            "Studies receiving instances, not yet complete",
            receiving,
        );
    }
}

/// Standard methods by name; anything else is `other` (methods are client-chosen).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::metrics::db_state;
    use crate::db::{Database, Durability};

    async fn memory_db() -> Database {
        // One connection: every connection to `sqlite::memory:` is its own database.
        let db = Database::connect_url("sqlite::memory:", Some(1), Durability::Os)
            .await
            .expect("in-memory database");
        db.migrate().await.expect("migrations");
        db
    }

    /// The value of the sample written exactly as `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("numeric sample"))
        })
    }

    #[tokio::test]
    async fn fresh_registry_renders_every_family_at_zero() {
        let db = memory_db().await;
        let text = Metrics::new().render(db_state(&db), 0).await;
        for series in [
            "radstream_dicom_instances_stored_total",
            "radstream_dicom_stored_bytes_total",
            "radstream_dicom_associations_accepted_total",
            "radstream_sse_subscribers",
            "radstream_dicom_associations_open",
            "radstream_jobs{state=\"queued\"}",
            "radstream_jobs{state=\"running\"}",
            "radstream_jobs_oldest_queued_age_seconds",
            "radstream_studies_receiving",
            "radstream_job_queue_wait_seconds_count",
            "radstream_inference_duration_seconds_count",
            "radstream_receipt_to_result_seconds_count",
        ] {
            assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
        }
        assert_eq!(sample(&text, "radstream_database_up"), Some(1.0));
        assert_eq!(
            sample(
                &text,
                &format!(
                    "radstream_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            Some(1.0)
        );
        // Labelled families (HTTP, failures, predictions...) show once they have a series.
        for ty in [
            "# TYPE radstream_dicom_stored_bytes counter",
            "# TYPE radstream_inference_duration_seconds histogram",
            "# TYPE radstream_jobs gauge",
        ] {
            assert!(text.contains(ty), "{ty} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // Every sample line is `name[{labels}] value`, with a `radstream_` name.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            assert!(series.starts_with("radstream_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[tokio::test]
    async fn counters_and_histograms_move() {
        let db = memory_db().await;
        let m = Metrics::new();
        let clone = m.clone();
        m.instance_stored(1000);
        clone.instance_stored(24);
        m.store_failed(0xA700);
        m.store_failed(0xA700);
        m.store_failed(0x0122);
        m.association_accepted();
        m.association_rejected("calling_ae_not_recognized");
        m.observe_queue_wait(0.2);
        m.observe_inference(1.5);
        m.observe_inference(40.0);
        m.observe_receipt_to_result(12.0);
        m.job_finished("succeeded");
        m.job_finished("retried");
        m.prediction("demo-cxr", "effusion", true);
        m.prediction("demo-cxr", "effusion", false);
        m.prediction("demo-cxr", "effusion", false);
        m.event_published("job.succeeded");
        let text = m.render(db_state(&db), 3).await;
        let expect = [
            ("radstream_dicom_instances_stored_total", 2.0),
            ("radstream_dicom_stored_bytes_total", 1024.0),
            (
                "radstream_dicom_store_failures_total{status=\"A700\"}",
                2.0,
            ),
            (
                "radstream_dicom_store_failures_total{status=\"0122\"}",
                1.0,
            ),
            ("radstream_dicom_associations_accepted_total", 1.0),
            (
                "radstream_dicom_associations_rejected_total{reason=\"calling_ae_not_recognized\"}",
                1.0,
            ),
            ("radstream_dicom_associations_open", 3.0),
            ("radstream_job_queue_wait_seconds_count", 1.0),
            ("radstream_job_queue_wait_seconds_sum", 0.2),
            ("radstream_inference_duration_seconds_count", 2.0),
            (
                "radstream_inference_duration_seconds_bucket{le=\"2.0\"}",
                1.0,
            ),
            (
                "radstream_inference_duration_seconds_bucket{le=\"+Inf\"}",
                2.0,
            ),
            ("radstream_receipt_to_result_seconds_sum", 12.0),
            (
                "radstream_jobs_finished_total{outcome=\"succeeded\"}",
                1.0,
            ),
            ("radstream_jobs_finished_total{outcome=\"retried\"}", 1.0),
            (
                "radstream_predictions_total{model=\"demo-cxr\",label=\"effusion\",present=\"true\"}",
                1.0,
            ),
            (
                "radstream_predictions_total{model=\"demo-cxr\",label=\"effusion\",present=\"false\"}",
                2.0,
            ),
            (
                "radstream_events_published_total{kind=\"job.succeeded\"}",
                1.0,
            ),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
    }

    #[tokio::test]
    async fn sse_guard_decrements_on_drop() {
        let db = memory_db().await;
        let m = Metrics::new();
        let a = m.sse_subscriber_opened();
        let b = m.sse_subscriber_opened();
        assert_eq!(
            sample(
                &m.render(db_state(&db), 0).await,
                "radstream_sse_subscribers"
            ),
            Some(2.0)
        );
        drop(a);
        assert_eq!(
            sample(
                &m.render(db_state(&db), 0).await,
                "radstream_sse_subscribers"
            ),
            Some(1.0)
        );
        drop(b);
        assert_eq!(
            sample(
                &m.render(db_state(&db), 0).await,
                "radstream_sse_subscribers"
            ),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn queue_and_study_gauges_come_from_the_database() {
        let db = memory_db().await;
        let old = now_ms() - 90_000;
        sqlx::query(
            "INSERT INTO patients (id, patient_key, created_at, updated_at) VALUES (1, 'p', $1, $1)",
        )
        .bind(old)
        .execute(&db.pool)
        .await
        .expect("patient row");
        for (uid, status) in [("1.2.3", "receiving"), ("1.2.4", "complete")] {
            sqlx::query(
                "INSERT INTO studies (study_uid, patient_pk, status, first_received_at, \
                 last_received_at, updated_at) VALUES ($1, 1, $2, $3, $3, $3)",
            )
            .bind(uid)
            .bind(status)
            .bind(old)
            .execute(&db.pool)
            .await
            .expect("study row");
        }
        for (state, created) in [
            ("queued", old),
            ("queued", now_ms()),
            ("running", old),
            ("succeeded", old),
            ("failed", old),
        ] {
            sqlx::query(
                "INSERT INTO jobs (study_uid, study_version, kind, state, created_at, updated_at) \
                 VALUES ('1.2.4', 1, 'reprocess', $1, $2, $2)",
            )
            .bind(state)
            .bind(created)
            .execute(&db.pool)
            .await
            .expect("job row");
        }
        let text = Metrics::new().render(db_state(&db), 0).await;
        assert_eq!(sample(&text, "radstream_jobs{state=\"queued\"}"), Some(2.0));
        assert_eq!(
            sample(&text, "radstream_jobs{state=\"running\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "radstream_studies_receiving"), Some(1.0));
        let age = sample(&text, "radstream_jobs_oldest_queued_age_seconds").unwrap();
        assert!((89.0..200.0).contains(&age), "oldest queued age {age}");
    }

    #[tokio::test]
    async fn an_unreachable_database_leaves_its_gauges_out() {
        let db = memory_db().await;
        db.pool.close().await;
        let m = Metrics::new();
        m.instance_stored(5);
        let text = m.render(db_state(&db), 1).await;
        assert_eq!(sample(&text, "radstream_database_up"), Some(0.0));
        assert!(!text.contains("radstream_jobs{"), "{text}");
        assert_eq!(
            sample(&text, "radstream_dicom_instances_stored_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "radstream_dicom_associations_open"),
            Some(1.0)
        );
    }

    #[test]
    fn http_labels_are_bounded() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(42), "other");
    }
}
