//! The one bounded accept loop's parts. A [`Limit`] admits connections up to a number (one per
//! port, or one per listener); [`Connections`] runs each admitted connection as a task holding
//! its slot until it ends, and at shutdown lets them finish within a grace period, then cuts the
//! rest. Every service (host, broker, enclave) accepts the same way:
//!
//! ```text
//! loop {
//!     select! { shutdown => break, connections.reap() => continue, accepted = accept() => … }
//!     let Some(permit) = limit.admit() else { refuse; continue };
//!     connections.spawn(permit, serve(connection));   // each with its own idle deadline
//! }
//! connections.drain(grace).await;
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// A slot under a [`Limit`], held for as long as its connection lives.
pub type Permit = OwnedSemaphorePermit;

/// At most so many connections at once.
#[derive(Debug, Clone)]
pub struct Limit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Limit {
    /// At most `max` at once.
    pub fn new(max: usize) -> Self {
        Limit {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot for one more connection, unless the limit is reached.
    pub fn admit(&self) -> Option<Permit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// How many slots are taken.
    pub fn in_use(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The connection tasks of a listener.
#[derive(Debug, Default)]
pub struct Connections {
    tasks: JoinSet<()>,
}

impl Connections {
    /// No connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run a connection's task, holding `permit` until it ends.
    pub fn spawn(&mut self, permit: Permit, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            task.await;
            drop(permit);
        });
    }

    /// Run a short task that holds no slot (a refusal being written).
    pub fn spawn_unlimited(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Wait for one task to finish (pending for ever when there is none), so that an accept
    /// loop reaps finished tasks as it goes.
    pub async fn reap(&mut self) {
        if self.tasks.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Let open connections finish for up to `grace`, then cut the rest.
    pub async fn drain(mut self, grace: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots come back when their connection ends; a connection still open at the end of the
    /// grace period is cut, and its slot comes back too.
    #[tokio::test(start_paused = true)]
    async fn slots_are_held_by_connections_and_drained_within_the_grace() {
        let limit = Limit::new(2);
        let mut connections = Connections::new();
        let quick = limit.admit().unwrap();
        let stuck = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        assert_eq!(limit.in_use(), 2);
        connections.spawn(quick, async {});
        connections.spawn(stuck, std::future::pending());
        connections.reap().await;
        assert_eq!(limit.in_use(), 1);
        let started = tokio::time::Instant::now();
        connections.drain(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // Aborted tasks drop their futures, and with them the permit, on the runtime's next
        // turn.
        tokio::task::yield_now().await;
        assert_eq!(limit.in_use(), 0);
    }
}
