//! The control socket server: framing, limits and access control. What the verbs do is
//! the business of a [`ControlHandler`].

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::protocol::{
    ActionReport, Body, CertReport, ControlError, ErrorKind, IkeSaReport, NeighborReport, Request,
    Response, StatusReport, TransitionReport,
};

/// Carries out the verbs. The daemon implements it over its engines; the server only
/// frames requests and responses.
pub trait ControlHandler: Send + Sync + 'static {
    fn status(&self) -> impl Future<Output = Result<StatusReport, ControlError>> + Send;
    fn list_neighbors(
        &self,
    ) -> impl Future<Output = Result<Vec<NeighborReport>, ControlError>> + Send;
    fn list_sas(&self) -> impl Future<Output = Result<Vec<IkeSaReport>, ControlError>> + Send;
    fn list_certs(&self) -> impl Future<Output = Result<Vec<CertReport>, ControlError>> + Send;
    fn initiate(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ActionReport, ControlError>> + Send;
    fn terminate(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ActionReport, ControlError>> + Send;
    fn rekey(
        &self,
        name: &str,
        ike: bool,
    ) -> impl Future<Output = Result<ActionReport, ControlError>> + Send;
    fn reload(&self) -> impl Future<Output = Result<ActionReport, ControlError>> + Send;
    fn history(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<TransitionReport>, ControlError>> + Send;
}

/// Runs one request through the handler.
pub async fn dispatch<H: ControlHandler>(handler: &H, request: Request) -> Response {
    let body = match request {
        Request::Status => handler.status().await.map(Body::Status),
        Request::ListNeighbors => handler.list_neighbors().await.map(Body::Neighbors),
        Request::ListSas => handler.list_sas().await.map(Body::Sas),
        Request::ListCerts => handler.list_certs().await.map(Body::Certs),
        Request::Initiate { name } => handler.initiate(&name).await.map(Body::Done),
        Request::Terminate { name } => handler.terminate(&name).await.map(Body::Done),
        Request::Rekey { name, ike } => handler.rekey(&name, ike).await.map(Body::Done),
        Request::Reload => handler.reload().await.map(Body::Done),
        Request::History { name } => handler.history(&name).await.map(Body::History),
    };
    body.unwrap_or_else(Body::Error).into()
}

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/iiptran/iiptran.sock";

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub path: PathBuf,
    /// Longest request line accepted, newline excluded.
    pub max_line: usize,
    /// Time a client has to send each complete request line, and to read each response.
    pub io_timeout: Duration,
    pub max_clients: usize,
}

impl ServerConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_line: 64 * 1024,
            io_timeout: Duration::from_secs(10),
            max_clients: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another iiptrand serves the control socket {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A bound control socket. The socket file is removed when the server stops.
pub struct ControlServer {
    listener: UnixListener,
    config: ServerConfig,
    /// Held for the server's life: whoever holds it owns the socket path, so a socket
    /// file found while holding it is stale.
    _lock: File,
    /// Identifies our socket file, so a successor's is never removed.
    inode: (u64, u64),
}

impl ControlServer {
    /// Binds the socket (mode 0600) at `config.path`, creating its directory (mode 0700)
    /// if missing. Must be called within a Tokio runtime.
    pub fn bind(config: ServerConfig) -> Result<Self, BindError> {
        let path = config.path.clone();
        let io_err = |source| BindError::Io {
            path: path.clone(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        // Not following a symlink, so a directory others can write to cannot point root
        // at another file.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(lock_path(&path))
            .map_err(io_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(BindError::InUse(path)),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket(path)),
            // A listener without our lock: a daemon that does not take it, still running.
            Ok(_) if std::os::unix::net::UnixStream::connect(&path).is_ok() => {
                return Err(BindError::InUse(path));
            }
            Ok(_) | Err(_) => {}
        }
        // Bound under a temporary name and renamed into place, so the path never shows a
        // socket with the umask's mode and a stale file is replaced in one step.
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(path.file_name().unwrap_or_default());
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        let _ = fs::remove_file(&tmp);
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err)?;
        let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        let meta = fs::symlink_metadata(&path).map_err(io_err)?;
        std_listener.set_nonblocking(true).map_err(io_err)?;
        let listener = UnixListener::from_std(std_listener).map_err(io_err)?;
        Ok(Self {
            listener,
            config,
            _lock: lock,
            inode: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Serves clients until `shutdown` completes; then drops every open connection and
    /// removes the socket file.
    pub async fn run<H: ControlHandler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.max_clients));
        let mut clients = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => return Ok(()),
                Some(_) = clients.join_next(), if !clients.is_empty() => continue,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    // Per-connection failures (e.g. the peer gave up) must not stop the
                    // server; running out of descriptors eases as clients leave.
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let connection = Connection {
                handler: handler.clone(),
                config: self.config.clone(),
            };
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    clients.spawn(async move {
                        connection.serve(stream).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    clients.spawn(async move {
                        let busy = ControlError::new(ErrorKind::Busy, "too many control clients");
                        connection.refuse(stream, busy).await;
                    });
                }
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.config.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours {
            let _ = fs::remove_file(&self.config.path);
        }
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

struct Connection<H> {
    handler: Arc<H>,
    config: ServerConfig,
}

enum Line {
    Complete,
    Eof,
    TooLong,
}

impl<H: ControlHandler> Connection<H> {
    async fn serve(self, stream: UnixStream) {
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "control client refused: not root");
                let refused = ControlError::new(
                    ErrorKind::Forbidden,
                    "only root may use iiptran's control socket",
                );
                return self.refuse(stream, refused).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control client refused: no peer credentials");
                return;
            }
        }
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = timeout(
                self.config.io_timeout,
                read_line(&mut reader, &mut line, self.config.max_line),
            )
            .await;
            let (response, last) = match read {
                Ok(Ok(Line::Complete)) => match Request::parse(&line) {
                    Ok(request) => (dispatch(&*self.handler, request).await, false),
                    Err(error) => (error.into(), false),
                },
                Ok(Ok(Line::Eof)) | Ok(Err(_)) => return,
                Ok(Ok(Line::TooLong)) => {
                    let message = format!("request longer than {} bytes", self.config.max_line);
                    (ControlError::new(ErrorKind::TooLong, message).into(), true)
                }
                Err(_) => {
                    let message =
                        format!("no complete request within {:?}", self.config.io_timeout);
                    (ControlError::new(ErrorKind::Timeout, message).into(), true)
                }
            };
            if !self.send(&mut writer, &response).await || last {
                return;
            }
        }
    }

    async fn refuse(self, mut stream: UnixStream, error: ControlError) {
        self.send(&mut stream, &error.into()).await;
    }

    /// Writes one response line; false when the client is gone or too slow to read.
    async fn send(&self, writer: &mut (impl AsyncWriteExt + Unpin), response: &Response) -> bool {
        let mut bytes = match serde_json::to_vec(response) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "control response not serializable");
                return false;
            }
        };
        bytes.push(b'\n');
        matches!(
            timeout(self.config.io_timeout, writer.write_all(&bytes)).await,
            Ok(Ok(()))
        )
    }
}

/// Reads up to and including a newline into `line` (newline removed), never holding
/// more than `max + 1` bytes of it.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = (&mut *reader).take(limit).read_until(b'\n', line).await?;
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Complete);
    }
    if n == 0 || line.len() <= max {
        // The client closed mid-line or before sending anything.
        return Ok(Line::Eof);
    }
    Ok(Line::TooLong)
}
