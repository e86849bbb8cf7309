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
        // Output captured, not inherited: npm's progress lines would land in
        // the middle of the test output. It is shown only when npm fails.
        let output = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(dir)
            .output();
        let failure = match &output {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "{}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(err) => Some(err.to_string()),
        };
        if let Some(failure) = failure {
            panic!(
                "`npm ci --prefix {}` failed (Node.js 18+ and npm are needed for this test): {failure}",
                dir.display()
            );
        }
    }
    for package in packages {
        assert!(!missing(package), "{package} is still missing in {}", dir.display());
    }
}
