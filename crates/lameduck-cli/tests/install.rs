//! `lameduck install DIR`, black-box: the copy, its mode, atomic replacement, errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{run, stderr, temp_dir};

/// The binary under test, whose bytes the installed copy must have.
fn source_bytes() -> Vec<u8> {
    fs::read(env!("CARGO_BIN_EXE_lameduck")).unwrap()
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Installs into `dir` and checks the result: exit 0, the stderr line, an executable
/// byte-identical copy that runs, and nothing else left in `dir`.
fn install_and_check(dir: &Path) {
    let (output, _) = run(&["install", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let installed = dir.join("lameduck");
    assert_eq!(
        stderr(&output),
        format!("lameduck install: installed {}\n", installed.display())
    );
    let meta = fs::metadata(&installed).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert!(
        fs::read(&installed).unwrap() == source_bytes(),
        "not identical"
    );
    assert_eq!(entries(dir), ["lameduck"], "a temporary file was left");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(version.status.success(), "{}", stderr(&version));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("lameduck "));
}

#[test]
fn installs_into_an_empty_directory_and_again_over_the_copy() {
    let dir = temp_dir("install-empty");
    install_and_check(&dir);
    let first = fs::metadata(dir.join("lameduck")).unwrap().ino();
    // Idempotent: again over an identical copy.
    install_and_check(&dir);
    let second = fs::metadata(dir.join("lameduck")).unwrap().ino();
    // Renamed over, not rewritten in place: a running copy is never modified.
    assert_ne!(first, second);
}

#[test]
fn replaces_another_file_atomically_by_rename() {
    let dir = temp_dir("install-over");
    let installed = dir.join("lameduck");
    fs::write(&installed, b"an older, different lameduck\n").unwrap();
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o600)).unwrap();
    // A hard link keeps the old inode reachable: a rename leaves it untouched, whereas
    // writing into the existing file (truncate, copy) would change it too.
    let witness = dir.join("old-link");
    fs::hard_link(&installed, &witness).unwrap();
    let old_inode = fs::metadata(&installed).unwrap().ino();

    let (output, _) = run(&["install", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_ne!(fs::metadata(&installed).unwrap().ino(), old_inode);
    assert_eq!(
        fs::read(&witness).unwrap(),
        b"an older, different lameduck\n"
    );
    fs::remove_file(&witness).unwrap();
    assert!(
        fs::read(&installed).unwrap() == source_bytes(),
        "not identical"
    );
    assert_eq!(entries(&dir), ["lameduck"], "a temporary file was left");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(version.status.success(), "{}", stderr(&version));
}

#[test]
fn the_installed_copy_can_install_itself_again() {
    let dir = temp_dir("install-self");
    install_and_check(&dir);
    let installed = dir.join("lameduck");
    let output = Command::new(&installed)
        .args(["install", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        fs::read(&installed).unwrap() == source_bytes(),
        "not identical"
    );
    assert_eq!(entries(&dir), ["lameduck"]);
}

#[test]
fn a_missing_directory_is_a_failure_naming_it_and_is_not_created() {
    let dir = temp_dir("install-missing");
    let missing = dir.join("no").join("such");
    let (output, _) = run(&["install", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.starts_with("lameduck install: "), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("os error 2"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(entries(&dir).is_empty());
}

#[test]
fn a_regular_file_as_directory_is_a_failure_naming_it() {
    let dir = temp_dir("install-file");
    let file = dir.join("file");
    fs::write(&file, b"x").unwrap();
    let (output, _) = run(&["install", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("Not a directory (os error 20)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"x");
    assert_eq!(entries(&dir), ["file"]);
}

#[test]
fn a_directory_in_the_way_is_a_failure_and_leaves_no_temporary_file() {
    let dir = temp_dir("install-dir-in-the-way");
    fs::create_dir(dir.join("lameduck")).unwrap();
    fs::write(dir.join("lameduck").join("keep"), b"k").unwrap();
    let (output, _) = run(&["install", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("cannot rename"), "{err}");
    assert!(
        err.contains(&dir.join("lameduck").display().to_string()),
        "{err}"
    );
    assert_eq!(entries(&dir), ["lameduck"], "a temporary file was left");
    assert_eq!(fs::read(dir.join("lameduck").join("keep")).unwrap(), b"k");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["install"][..],
        &["install", "/a", "/b"],
        &["install", "--name", "x", "/a"],
    ] {
        let (output, _) = run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn help_has_examples_and_exit_codes() {
    let (output, _) = run(&["install", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("initContainers:"), "{help}");
    let (output, _) = run(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("  install "), "{help}");
}
