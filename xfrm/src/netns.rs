//! Running async code inside another network namespace: a dedicated thread enters the
//! namespace with `setns` and drives a current-thread tokio runtime there, so sockets,
//! TUN devices and netlink sockets it opens belong to that namespace.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::JoinHandle;

/// Spawns a thread in the namespace at `ns_path` (e.g. `/run/netns/NAME`) that runs `f`
/// to completion on its own runtime; join the handle for the result.
pub fn spawn_in<F, Fut, T>(ns_path: &Path, f: F) -> io::Result<JoinHandle<io::Result<T>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let ns = File::open(ns_path)?;
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            enter(&ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(f()))
        })
}

/// Moves the calling thread into the network namespace `ns`.
pub fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor and changes this thread's namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
