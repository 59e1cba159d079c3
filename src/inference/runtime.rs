//! Finding and initialising ONNX Runtime (loaded at run time, `load-dynamic`), and creating
//! sessions with the configured execution providers.
//!
//! ort allows one environment per process, and the shared library can be loaded only once, so
//! the first successful [`runtime`] call wins and later calls (a second `Engine::load`, tests)
//! share it.

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

use super::{InferenceError, InferenceSettings};

/// The process-wide ONNX Runtime.
pub struct Runtime {
    env: ort::environment::Environment,
    /// Shared library in use.
    pub dylib: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("dylib", &self.dylib)
            .finish()
    }
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// Returns the process-wide runtime, loading the library on first use.
pub fn runtime(settings: &InferenceSettings) -> Result<Arc<Runtime>, InferenceError> {
    let mut guard = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = guard.as_ref() {
        if let Some(wanted) = &settings.ort_dylib_path {
            if wanted != &rt.dylib {
                warn!(
                    wanted = %wanted.display(),
                    in_use = %rt.dylib.display(),
                    "ONNX Runtime is already loaded in this process; keeping the loaded library"
                );
            }
        }
        return Ok(rt.clone());
    }
    let (candidates, looked) = candidates(settings);
    if candidates.is_empty() {
        return Err(InferenceError::RuntimeNotFound(format!(
            "looked in: {}. Install it with `.venv/bin/pip install onnxruntime==1.32.0` or set \
             inference.ort_dylib_path / ORT_DYLIB_PATH to the versioned libonnxruntime.so.1.x.y file",
            looked.join("; ")
        )));
    }
    let mut failures = Vec::new();
    for path in candidates {
        match ort::init_from(&path) {
            Ok(builder) => {
                let env = builder
                    .with_name("radstream")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| InferenceError::RuntimeInit {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                info!(dylib = %path.display(), "ONNX Runtime loaded");
                let rt = Arc::new(Runtime { env, dylib: path });
                *guard = Some(rt.clone());
                return Ok(rt);
            }
            Err(e) => {
                warn!(dylib = %path.display(), error = %e, "cannot load this ONNX Runtime library");
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    let last = failures.pop().unwrap_or_default();
    Err(InferenceError::RuntimeInit {
        path: PathBuf::from(last.split(": ").next().unwrap_or_default()),
        reason: if failures.is_empty() {
            last
        } else {
            format!("{last} (also failed: {})", failures.join("; "))
        },
    })
}

/// Candidate library files in discovery order, and a description of every place looked at.
fn candidates(settings: &InferenceSettings) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut looked = Vec::new();
    let push = |p: PathBuf, found: &mut Vec<PathBuf>| {
        if p.is_file() && !found.contains(&p) {
            found.push(p);
        }
    };
    if let Some(p) = &settings.ort_dylib_path {
        looked.push(format!("inference.ort_dylib_path={}", p.display()));
        push(p.clone(), &mut found);
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        looked.push(format!("ORT_DYLIB_PATH={}", Path::new(&p).display()));
        push(PathBuf::from(p), &mut found);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        looked.push(format!("{}/libonnxruntime.so*", dir.display()));
        if let Some(p) = newest_lib_in(dir) {
            push(p, &mut found);
        }
    }
    for python in pythons(exe_dir.as_deref()) {
        looked.push(format!("onnxruntime package of {}", python.display()));
        if let Some(p) = lib_from_python(&python) {
            push(p, &mut found);
        }
    }
    (found, looked)
}

/// Python interpreters to ask, best first.
fn pythons(exe_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        out.push(Path::new(&venv).join("bin/python3"));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    // Set by cargo for tests and examples: the repository root.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        roots.push(PathBuf::from(dir));
    }
    if let Some(dir) = exe_dir {
        // Walk up from the executable to the repository root (the first folder with a
        // Cargo.toml or .git), e.g. target/release/radstream -> repo.
        for anc in dir.ancestors() {
            roots.push(anc.to_path_buf());
            if anc.join("Cargo.toml").is_file() || anc.join(".git").exists() {
                break;
            }
        }
    }
    for r in roots {
        let p = r.join(".venv/bin/python3");
        if p.is_file() && !out.contains(&p) {
            out.push(p);
        }
    }
    out.push(PathBuf::from("python3"));
    out
}

/// Asks `python` where the `onnxruntime` package is, without importing it.
fn lib_from_python(python: &Path) -> Option<PathBuf> {
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    if dir.is_empty() {
        return None;
    }
    newest_lib_in(&Path::new(dir).join("capi"))
}

/// The `libonnxruntime.so*` with the highest version in `dir` (not the providers' libraries).
fn newest_lib_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("libonnxruntime.so")?;
            let version = rest
                .trim_start_matches('.')
                .split('.')
                .filter_map(|p| p.parse().ok())
                .collect();
            Some((version, e.path()))
        })
        .collect();
    libs.sort();
    libs.pop().map(|(_, p)| p)
}

/// Execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
}

impl Provider {
    /// `"cpu"` or `"cuda"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }

    /// Device description for health output.
    pub fn device(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda:0",
        }
    }
}

/// Creates a session for `bytes` (an ONNX file read from `path`), trying `providers` in order.
/// A provider that fails to register is logged once per reason in `warned` and skipped.
pub(crate) fn create_session(
    rt: &Runtime,
    path: &Path,
    bytes: &[u8],
    providers: &[String],
    intra_threads: usize,
    warned: &mut Vec<String>,
) -> Result<(Session, Provider), InferenceError> {
    let fail = |reason: String| InferenceError::Session {
        path: path.to_owned(),
        reason,
    };
    let mut builder = Session::builder(&rt.env)
        .map_err(|e| fail(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| fail(e.to_string()))?
        .with_intra_threads(intra_threads)
        .map_err(|e| fail(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| fail(e.to_string()))?;
    let mut chosen = Provider::Cpu;
    for p in providers {
        match p.to_ascii_lowercase().as_str() {
            "cuda" => {
                let (b, outcome) = try_cuda(builder);
                builder = b;
                match outcome {
                    Ok(()) => {
                        chosen = Provider::Cuda;
                        break;
                    }
                    Err(reason) => {
                        if !warned.contains(&reason) {
                            warn!(
                                %reason,
                                "CUDA execution provider requested but unavailable; falling back to the next provider (CPU)"
                            );
                            warned.push(reason);
                        }
                    }
                }
            }
            _ => {
                chosen = Provider::Cpu;
                break;
            }
        }
    }
    let session = builder
        .commit_from_memory(bytes)
        .map_err(|e| fail(e.to_string()))?;
    Ok((session, chosen))
}

type Builder = ort::session::builder::SessionBuilder;

/// Registers CUDA (with `error_on_failure`); gives the builder back either way, with the reason
/// when registration failed.
#[cfg(feature = "cuda")]
fn try_cuda(builder: Builder) -> (Builder, Result<(), String>) {
    match builder.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()]) {
        Ok(b) => (b, Ok(())),
        Err(e) => {
            let reason = e.to_string();
            (e.recover(), Err(reason))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn try_cuda(builder: Builder) -> (Builder, Result<(), String>) {
    (
        builder,
        Err("radstream was built without the `cuda` feature (rebuild with --features cuda and install onnxruntime-gpu)".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_lib_skips_providers_and_picks_highest_version() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "libonnxruntime.so.1.31.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let p = newest_lib_in(dir.path()).unwrap();
        assert!(p.ends_with("libonnxruntime.so.1.32.0"), "{p:?}");
    }
}
