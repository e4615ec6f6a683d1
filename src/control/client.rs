//! A blocking client for the control socket: one request, one response.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Request, Response, VERSION};

/// Longest response accepted: far above any real report, but bounded.
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached: no daemon, or no permission.
    #[error("cannot reach iiptrand at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("control socket {path}: invalid response: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

/// Sends `request` to the daemon at `path` and waits up to `timeout` for each step.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let io_err = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let protocol = |reason: String| ClientError::Protocol {
        path: path.to_owned(),
        reason,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_vec(request).map_err(|e| protocol(e.to_string()))?;
    line.push(b'\n');
    // A daemon that refuses the client answers and closes without reading the request,
    // so a failed write may still leave its answer to read.
    let written = stream.write_all(&line);

    let mut reply = Vec::new();
    let read = BufReader::new(stream.take(MAX_RESPONSE)).read_until(b'\n', &mut reply);
    if reply.pop() != Some(b'\n') {
        written.map_err(io_err)?;
        read.map_err(io_err)?;
        return Err(protocol(
            "connection closed before a complete response".into(),
        ));
    }
    let response: Response = serde_json::from_slice(&reply).map_err(|e| protocol(e.to_string()))?;
    if response.version != VERSION {
        return Err(protocol(format!(
            "schema version {}, this iiptranctl speaks {VERSION}",
            response.version
        )));
    }
    Ok(response)
}
