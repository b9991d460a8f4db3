//! Helpers of the tests that run C programs under `LD_PRELOAD`
//! (tests/capi_preload.rs, tests/option_effects.rs): the preload library,
//! built once per test binary, scratch directories, compiling
//! `tests/preload/*.c`, and running a program with a timeout. Included with
//! `#[path = "common/preload.rs"] mod preload;`; not every binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
pub const SCRATCH: &str = env!("CARGO_TARGET_TMPDIR");
/// Longest any one program may run before the test calls it hung.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The preload library, built once per test binary (with `secure` when
/// the tests are).
pub fn cdylib() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        if let Some(p) = std::env::var_os("SEGALLOC_PRELOAD_SO") {
            return PathBuf::from(p);
        }
        // The library gets the hardening of the tests' own build: the
        // `secure` run of the suite then checks the C front end with it.
        let (features, dir) = if cfg!(feature = "secure") {
            ("override,secure", "capi-preload-target-secure")
        } else {
            ("override", "capi-preload-target")
        };
        let target = Path::new(SCRATCH).join(dir);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--features", features, "--lib"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(MANIFEST)
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "building the cdylib failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let so = target.join("release/libsegalloc.so");
        assert!(so.is_file(), "{} missing after the build", so.display());
        so
    })
}

/// A scratch directory for one test, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(SCRATCH).join("capi-preload").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Whether `prog` can be run (found on PATH and starts).
pub fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Compiles `tests/preload/<name>.c` into `dir` (with `-O1 -pthread` and
/// `extra` after the source); `None`, with a note, when there is no C
/// compiler.
pub fn compile_c(dir: &Path, name: &str, extra: &[&str]) -> Option<PathBuf> {
    if !have("cc") {
        println!("note: no C compiler (cc); {name} skipped");
        return None;
    }
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(Path::new(MANIFEST).join(format!("tests/preload/{name}.c")))
        .args(extra)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

/// Runs `cmd` with stdout and stderr captured to files (so a chatty program
/// cannot block on a full pipe), killing it after [`TIMEOUT`].
pub fn run(mut cmd: Command, dir: &Path, tag: &str) -> Output {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    cmd.stdout(fs::File::create(&out_path).expect("stdout file"));
    cmd.stderr(fs::File::create(&err_path).expect("stderr file"));
    cmd.stdin(Stdio::null());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tag}: {desc} did not finish within {TIMEOUT:?}");
        }
        sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: fs::read(&out_path).expect("read stdout"),
        stderr: fs::read(&err_path).expect("read stderr"),
    }
}
