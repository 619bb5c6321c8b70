//! A small file system of the run's own for the buffer (a tmpfs, so root only), which a
//! ballast file fills to the last page and deleting it frees: a full disk as the gateway's
//! data partition meets it, without touching the machine's own disks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::mosquitto::running_as_root;

pub struct SmallDisk {
    mount: PathBuf,
    ballast: PathBuf,
}

impl SmallDisk {
    /// Mount a tmpfs of `mib` MiB at `mount` (made if missing), or say why not.
    pub fn mount(mount: &Path, mib: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(mount).map_err(|e| format!("{}: {e}", mount.display()))?;
        if !running_as_root() {
            return Err("not running as root (mounting a tmpfs needs it)".into());
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(mount)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk {
            mount: mount.to_path_buf(),
            ballast: mount.join("ballast"),
        })
    }

    /// Fill every free page with the ballast file; returns its size in bytes.
    pub fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(&self.ballast).expect("ballast file");
        let mut size = 0u64;
        // Large writes first, then single pages, until the file system refuses.
        for chunk in [1 << 20, 1 << 12] {
            let zeros = vec![0u8; chunk];
            while f.write_all(&zeros).is_ok() {
                size += chunk as u64;
            }
        }
        let _ = f.sync_all();
        size
    }

    /// Delete the ballast: the space is back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.ballast);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.free();
        // Lazily, so a process still holding a file there cannot keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
