//! A conformance suite with a local filesystem as the oracle: the same cases, each a short
//! sequence of system calls made by root and by another user (`tests/conformance/cases.py`),
//! run in a tmpfs directory and on a lockfs mount, must give the same results: return values,
//! errno, and the `lstat` fields that describe the outcome (kind, permission bits, link count,
//! owner, size of files and links).
//!
//! What lockfs does not do by design (README, Mounting) is not among the cases; a case that
//! differs fails the test with both outputs. Needs root, `/dev/fuse` and tmpfs.

mod common;

use std::path::{Path, PathBuf};

use common::hosts::Hosts;

/// Cases whose outcome on lockfs is not a local filesystem's, by design (README, Mounting).
const DIFFERENT_BY_DESIGN: &[(&str, &str)] = &[
    (
        "open_trunc |",
        "open(O_TRUNC) empties the file at the first write, or when the kernel's RELEASE \
         arrives after close(2), so that `echo x > f` replaces the file atomically",
    ),
    (
        "xattrs |",
        "only lockfs's own user.lockfs.* attributes exist (ENOTSUP for others)",
    ),
    (
        "atime_on_read |",
        "reads commit nothing, so they never update the access time (as with noatime)",
    ),
];

/// A tmpfs mounted for the test, unmounted when it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0777", "lockfs-oracle"])
            .arg(at)
            .output()
            .expect("mount(8)");
        assert!(
            out.status.success(),
            "mounting the tmpfs oracle: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Runs every case under `dir` (made world-writable so the other user's steps can create).
fn run_cases(h: &Hosts, cases: &Path, dir: &str) -> Vec<String> {
    let out = h.ok(&format!(
        "mkdir -p {dir} && chmod 0777 {dir} && cd {dir} && \
         /usr/bin/python3 '{}' \"$(pwd)\"",
        cases.display()
    ));
    out.lines().map(str::to_owned).collect()
}

#[test]
fn system_calls_give_what_a_local_filesystem_gives() {
    let h = Hosts::start();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases.py");
    let oracle = Tmpfs::mount(&h.out("oracle"));
    let want = run_cases(&h, &cases, &format!("'{}/cases'", oracle.0.display()));
    let got = run_cases(&h, &cases, "\"$A/cases\"");
    assert_eq!(want.len(), got.len(), "the same cases ran");
    assert!(want.len() >= 50, "only {} cases ran", want.len());
    let differing: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| w != g && !DIFFERENT_BY_DESIGN.iter().any(|(c, _)| w.starts_with(c)))
        .map(|(w, g)| format!("tmpfs:  {w}\nlockfs: {g}"))
        .collect();
    eprintln!(
        "{} cases, each several system calls; {} differ",
        want.len(),
        differing.len()
    );
    assert!(differing.is_empty(), "\n{}", differing.join("\n"));
    // The list stays honest: each case on it still differs.
    for (case, why) in DIFFERENT_BY_DESIGN {
        let (w, g) = want
            .iter()
            .zip(&got)
            .find(|(w, _)| w.starts_with(case))
            .unwrap_or_else(|| panic!("no case {case}"));
        eprintln!("by design ({why}):\n  tmpfs:  {w}\n  lockfs: {g}");
        assert_ne!(w, g, "{case} agrees now: take it off the list");
    }
}
