//! The one interface the daemon drives, whichever backend carries the packets.

use std::future::Future;
use std::io;
use std::net::IpAddr;

use tokio::sync::broadcast;

use crate::model::{DataplaneEvent, LinkSpec, PolicyId, PolicySpec, SaId, SaSpec, SaStats};

/// Why a data-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("not supported by this data plane: {0}")]
    Unsupported(String),
    #[error("no such object: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Exists(String),
    /// The kernel answered a request with an error code.
    #[error("kernel refused {op}: {source}")]
    Kernel {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The errno behind a kernel refusal or a failed system call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } | Self::Io(source) => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the object was not there: [`Error::NotFound`], or the kernel's ENOENT
    /// (policies), ESRCH (SAs) or ENODEV (links). Callers see one meaning per backend.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
            || matches!(
                self.errno(),
                Some(libc::ENOENT | libc::ESRCH | libc::ENODEV)
            )
    }

    /// Whether the object was there already: [`Error::Exists`], or the kernel's EEXIST.
    pub fn is_exists(&self) -> bool {
        matches!(self, Self::Exists(_)) || self.errno() == Some(libc::EEXIST)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Installs and removes SAs, policies and virtual links, reports counters and events.
///
/// SAs whose SPI came from [`allocate_spi`](Self::allocate_spi) are installed with
/// [`update_sa`](Self::update_sa) (the allocation created a placeholder); every other SA with
/// [`install_sa`](Self::install_sa). Updating an SA that already carries traffic changes only
/// its lifetimes and encapsulation, as the kernel does.
pub trait Dataplane: Send + Sync {
    /// Reserves an unused inbound SPI for an SA from `src` to `dst`.
    fn allocate_spi(
        &self,
        src: IpAddr,
        dst: IpAddr,
        reqid: u32,
    ) -> impl Future<Output = Result<u32>> + Send;
    fn install_sa(&self, sa: &SaSpec) -> impl Future<Output = Result<()>> + Send;
    fn update_sa(&self, sa: &SaSpec) -> impl Future<Output = Result<()>> + Send;
    fn delete_sa(&self, id: SaId) -> impl Future<Output = Result<()>> + Send;
    fn sa_stats(&self, id: SaId) -> impl Future<Output = Result<SaStats>> + Send;

    fn install_policy(&self, policy: &PolicySpec) -> impl Future<Output = Result<()>> + Send;
    fn delete_policy(&self, id: PolicyId) -> impl Future<Output = Result<()>> + Send;
    /// Every policy the data plane holds that the model can express, ours or not.
    fn policies(&self) -> impl Future<Output = Result<Vec<PolicySpec>>> + Send;

    /// Creates the virtual link (down) with its inner addresses and MTU.
    fn create_link(&self, link: &LinkSpec) -> impl Future<Output = Result<()>> + Send;
    fn set_link_up(&self, name: &str, up: bool) -> impl Future<Output = Result<()>> + Send;
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Deletes every link, at once where the backend can: for the daemon's shutdown.
    fn delete_links(&self) -> impl Future<Output = Result<()>> + Send;

    /// Events from now on. A receiver that lags loses the oldest events, never blocks the
    /// data plane.
    fn subscribe(&self) -> broadcast::Receiver<DataplaneEvent>;

    /// Whether what this data plane installs outlives the daemon's process, so that a
    /// restart after a crash must find and remove it. Kernel objects do; userspace tables
    /// and non-persistent TUN devices go with the process.
    fn outlives_process(&self) -> bool;

    /// Removes every SA and policy tagged as the daemon's (see [`crate::OWNED_REQIDS`] and
    /// [`crate::OWNED_PRIORITIES`]) and nothing else; used after a crash.
    fn flush_ours(&self) -> impl Future<Output = Result<()>> + Send;
}
