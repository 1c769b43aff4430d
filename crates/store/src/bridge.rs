//! Synchronous calls into async clients (sqlx, object_store): the work runs as a task on a
//! runtime and the caller waits on a channel. Unlike `Handle::block_on`, this works from any
//! thread (an async worker included), and the work finishes even if the caller goes away — a
//! commit of refs is never cancelled midway.
//!
//! Waiting from a worker of the same runtime could starve it, so the stores that are called from
//! anywhere run their work on a [`Bridge`], a small runtime of their own.

use std::sync::Mutex;

use tokio::runtime::{Handle, Runtime};

/// Runs `work` on `handle`'s runtime and waits for it; `None` if that runtime stopped first.
pub fn wait_on<T: Send + 'static>(handle: &Handle, work: impl Future<Output = T> + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().ok()
}

/// A runtime of a store's own (two worker threads).
pub struct Bridge {
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

impl Bridge {
    pub fn new(name: &str) -> std::io::Result<Bridge> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(name).enable_all().build()?;
        Ok(Bridge { handle: runtime.handle().clone(), runtime: Mutex::new(Some(runtime)) })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `work` to completion on this runtime and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = crate::Result<T>> + Send + 'static,
    ) -> crate::Result<T> {
        wait_on(&self.handle, work).unwrap_or_else(|| Err(crate::Error::Backend("the store's runtime stopped".into())))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another runtime; this never does.
        if let Some(runtime) = self.runtime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            runtime.shutdown_background();
        }
    }
}
