//! The power-cut shim (`tests/powercut/shim.c`): a disk with a volatile write cache and
//! faults on demand, loaded into the agent with `LD_PRELOAD`. Built once per test process
//! with the system C compiler.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The shim's shared object, compiled on first use (warnings are errors).
pub fn powercut_shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powercut/shim.c");
        // One per test binary: tests of several binaries build at once.
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("powercut-shim-{name}.so"));
        let status = std::process::Command::new("cc")
            .args([
                "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
            ])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("the system C compiler (cc) runs");
        assert!(status.success(), "compiling {}", src.display());
        out
    })
}

/// The environment that loads the shim into the agent with faults on demand: the files
/// whose paths start with `shimmed` fail as the first word of the control file `ctl` says
/// (`ok`, `enospc`, `erofs`, `eio`, `cut`; see `tests/powercut/shim.c`).
pub fn fault_env(shimmed: &Path, ctl: &Path) -> [(&'static str, String); 3] {
    [
        ("LD_PRELOAD", powercut_shim().display().to_string()),
        ("POWERCUT_DIR", shimmed.display().to_string()),
        ("POWERCUT_CTL", ctl.display().to_string()),
    ]
}
