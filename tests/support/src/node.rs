//! Node.js harnesses (Socket.IO clients, the headless browser driver).

use std::sync::Mutex;

/// Makes sure the npm packages of a Node test harness are installed, running
/// `npm ci` in `dir` once if any is missing (the registry is reachable from
/// developer machines and CI; `.ci/run` also installs them up front).
pub fn ensure_npm_packages(dir: &std::path::Path, packages: &[&str]) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let missing = |p: &&str| !dir.join("node_modules").join(p).join("package.json").is_file();
    if packages.iter().any(missing) {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "`npm ci --prefix {}` failed ({status:?}): Node.js 18+ and npm are needed for this test",
            dir.display()
        );
    }
    for package in packages {
        assert!(!missing(package), "{package} is still missing in {}", dir.display());
    }
}
