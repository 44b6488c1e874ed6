//! The command line as a user meets it: help with examples, exit codes for usage errors.

use std::process::Command;

fn mbc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mbc-node"))
        .args(args)
        .env_remove("MBC_NODE_DIR")
        .output()
        .unwrap()
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        &["init"][..],
        &["import"],
        &["synth"],
        &["status"],
        &["instruments", "add"],
        &["instruments", "list"],
        &["release"],
        &["budget"],
        &["audit"],
        &["run"],
        &["network", "create"],
        &["network", "join-request"],
        &["network", "admit"],
        &["network", "remove"],
        &["network", "join"],
        &["network", "roster"],
        &["network", "peers"],
        &["network", "ping"],
        &["stats"],
        &["report"],
        &["round", "start"],
        &["round", "status"],
        &["benchmark", "list"],
        &["benchmark", "show"],
        &["benchmark", "export"],
        &["store", "query"],
        &["store", "encrypt"],
        &["demo"],
        &["users", "add"],
        &["users", "list"],
        &["users", "disable"],
        &["users", "password"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = mbc(&args);
        assert!(out.status.success(), "{cmd:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        if cmd[0] != "synth" && cmd[0] != "demo" {
            assert!(
                help.contains("--data-dir"),
                "{cmd:?} help lacks --data-dir:\n{help}"
            );
        }
        assert!(
            help.contains("Example: mbc-node"),
            "{cmd:?} help lacks an example:\n{help}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1() {
    let out = mbc(&["import"]);
    assert_eq!(out.status.code(), Some(2), "missing arguments");
    let out = mbc(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "unknown subcommand");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = mbc(&["status", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: couldn't read"), "{err}");
    assert!(err.contains("config.toml"), "{err}");
}

/// Output into a pipe whose reader is gone (`mbc-node status | head -1` after head exits) ends
/// quietly with success, not with a panic.
#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let node = node.to_str().unwrap();
    assert!(
        mbc(&["init", "--data-dir", node, "--name", "x"])
            .status
            .success()
    );
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_mbc-node"))
        .args(["status", "--data-dir", node])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
