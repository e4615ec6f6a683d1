//! A directory for logs, configurations and keys that disappears with its guard.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A directory removed on drop, unless `keep` is set or the thread is panicking (then
/// its path is printed so logs and captures can be inspected).
pub struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl WorkDir {
    /// Creates `path` (and its parents).
    pub fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    /// A new directory `iiptran-<what>-<pid>-<n>` under the system's temporary directory.
    pub fn temp(what: &str) -> Result<Self> {
        let name = format!("iiptran-{what}-{}", crate::unique_suffix());
        Self::new(std::env::temp_dir().join(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
