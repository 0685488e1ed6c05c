//! Bounded sets of connection tasks: admission against a limit, and draining within a grace
//! period at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Connections {
    limit: Arc<Semaphore>,
    max: usize,
    tasks: JoinSet<()>,
}

impl Connections {
    /// At most `max` at once.
    pub(crate) fn new(max: usize) -> Self {
        Connections {
            limit: Arc::new(Semaphore::new(max)),
            max,
            tasks: JoinSet::new(),
        }
    }

    /// A slot for one more connection, unless the limit is reached.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.limit.clone().try_acquire_owned().ok()
    }

    /// How many slots are taken.
    pub(crate) fn in_use(&self) -> usize {
        self.max.saturating_sub(self.limit.available_permits())
    }

    /// Run a connection's task, holding its slot until it ends.
    pub(crate) fn spawn(
        &mut self,
        permit: OwnedSemaphorePermit,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            task.await;
            drop(permit);
        });
    }

    /// Wait for one task to finish (pending forever when there is none).
    pub(crate) async fn reap(&mut self) {
        if self.tasks.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Let open connections finish for up to `grace`, then cut the rest.
    pub(crate) async fn drain(mut self, grace: Duration) {
        let finished = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                cut = self.tasks.len(),
                "closing connections still open after the grace period"
            );
            self.tasks.abort_all();
        }
    }
}
