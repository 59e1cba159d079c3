//! The node's long-running tasks (listeners, tracker, workers) under one cancellation token.
//! Each task runs until the token fires; one that ends before that (returns, fails or
//! panics) is logged by name and cancels the token, so the whole node stops cleanly and
//! [`Supervisor::wait`] reports the failure: `radstream serve` then exits non-zero and a
//! service manager restarts it, instead of a half-dead node serving on.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Named tasks sharing one cancellation token.
pub struct Supervisor {
    cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

impl Supervisor {
    pub fn new(cancel: CancellationToken) -> Supervisor {
        Supervisor {
            cancel,
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// Starts `task`, which must run until the token is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for every task. The first to end while the token is not yet cancelled stops
    /// the others; the result names it (or the first task that failed during shutdown).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut failure: Option<anyhow::Error> = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let (id, outcome) = match joined {
                Ok((id, result)) => (id, result),
                Err(e) => (e.id(), Err(anyhow::anyhow!("panicked: {e}"))),
            };
            let name = self.names.get(&id).copied().unwrap_or("unnamed task");
            let unexpected = !self.cancel.is_cancelled();
            let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
            if unexpected {
                tracing::error!(
                    task = name,
                    error = error.as_deref().unwrap_or("none"),
                    "task stopped unexpectedly; stopping the node so that it can be restarted"
                );
                self.cancel.cancel();
            } else if let Some(error) = &error {
                tracing::error!(task = name, error, "task failed while stopping");
            } else {
                continue;
            }
            if failure.is_none() {
                let cause = outcome
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly"));
                failure = Some(cause.context(format!("{name} stopped")));
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Work a request starts that outlives it (an adapter's analysis job): tracked, and stopped
/// when the node stops. [`Background::run`] is the supervised task that waits for it.
#[derive(Clone)]
pub struct Background {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    pub fn new(cancel: CancellationToken) -> Background {
        Background {
            tracker: TaskTracker::new(),
            cancel,
        }
    }

    /// Runs `work` until it ends or the node stops.
    pub fn spawn<F>(&self, what: &'static str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => tracing::info!(work = what, "stopped by the node's shutdown"),
                _ = work => {}
            }
        });
    }

    /// Ends once the node is stopping and all background work has stopped.
    pub async fn run(self) -> anyhow::Result<()> {
        self.cancel.cancelled().await;
        self.tracker.close();
        self.tracker.wait().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A task like the listeners: runs until cancelled, then notes that it stopped.
    async fn until_cancelled(
        cancel: CancellationToken,
        stopped: Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        cancel.cancelled().await;
        stopped.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test]
    async fn one_task_ending_early_stops_the_others_and_is_named() {
        let cancel = CancellationToken::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let mut node = Supervisor::new(cancel.clone());
        node.spawn("http", until_cancelled(cancel.clone(), stopped.clone()));
        node.spawn("study tracker", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        });
        let result = tokio::time::timeout(Duration::from_secs(5), node.wait())
            .await
            .expect("the node stops by itself");
        let err = result.expect_err("an unexpected stop is a failure");
        assert_eq!(err.to_string(), "study tracker stopped");
        assert!(cancel.is_cancelled());
        assert!(
            stopped.load(Ordering::SeqCst),
            "the other task ran to its end"
        );
    }

    #[tokio::test]
    async fn a_panic_and_an_error_are_failures_too() {
        let cancel = CancellationToken::new();
        let mut node = Supervisor::new(cancel.clone());
        node.spawn("dicom", async { panic!("boom") });
        let err = node.wait().await.unwrap_err();
        assert!(
            format!("{err:#}").starts_with("dicom stopped: panicked"),
            "{err:#}"
        );
        assert!(cancel.is_cancelled());

        let cancel = CancellationToken::new();
        let mut node = Supervisor::new(cancel.clone());
        node.spawn("http", async { Err(anyhow::anyhow!("address in use")) });
        let err = node.wait().await.unwrap_err();
        assert_eq!(format!("{err:#}"), "http stopped: address in use");
    }

    #[tokio::test]
    async fn background_work_stops_with_the_node() {
        let cancel = CancellationToken::new();
        let work = Background::new(cancel.clone());
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        work.spawn("a long job", async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            f.store(true, Ordering::SeqCst);
        });
        let mut node = Supervisor::new(cancel.clone());
        node.spawn("background work", work.run());
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), node.wait())
            .await
            .expect("the job stops with the node")
            .expect("a requested stop is not a failure");
        assert!(!finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_requested_shutdown_is_clean() {
        let cancel = CancellationToken::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let mut node = Supervisor::new(cancel.clone());
        node.spawn("http", until_cancelled(cancel.clone(), stopped.clone()));
        node.spawn("dicom", until_cancelled(cancel.clone(), stopped.clone()));
        cancel.cancel();
        node.wait()
            .await
            .expect("a requested stop is not a failure");
        assert!(stopped.load(Ordering::SeqCst));
    }
}
