//! Syntax tests for every customization option.

use super::*;
use std::path::Path;

fn ctx(dir: &Path) -> ParseContext {
    ParseContext {
        base_dir: dir.to_path_buf(),
        home: Some(dir.join("home")),
    }
}

fn one(name: &str, arg: &str) -> CustomizeOp {
    let d = tempfile::tempdir().unwrap();
    one_in(d.path(), name, arg)
}

fn one_in(dir: &Path, name: &str, arg: &str) -> CustomizeOp {
    let mut v = parse_option(name, Some(arg), &ctx(dir), Origin::CommandLine).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0).op
}

fn err(name: &str, arg: Option<&str>) -> String {
    let d = tempfile::tempdir().unwrap();
    parse_option(name, arg, &ctx(d.path()), Origin::CommandLine)
        .unwrap_err()
        .to_string()
}

#[test]
fn write() {
    assert_eq!(
        one("write", "/etc/motd:hello: world"),
        CustomizeOp::Write {
            path: "/etc/motd".into(),
            content: "hello: world".into()
        }
    );
    assert_eq!(
        one("write", "/e:"),
        CustomizeOp::Write {
            path: "/e".into(),
            content: String::new()
        }
    );
    let e = err("write", Some("etc/motd:x"));
    assert!(
        e.contains("--write") && e.contains("must be absolute"),
        "{e}"
    );
    let e = err("write", Some("/etc/motd"));
    assert!(e.contains("expected FILE:CONTENT"), "{e}");
    let e = err("write", None);
    assert!(e.contains("needs an argument"), "{e}");
}

#[test]
fn upload_reads_host_file_with_mode() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("script.sh");
    std::fs::write(&f, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    // Relative to the base directory.
    match one_in(d.path(), "upload", "script.sh:/usr/local/bin/") {
        CustomizeOp::Upload { file, dest } => {
            assert_eq!(dest, "/usr/local/bin/");
            assert_eq!(file.data, b"#!/bin/sh\n");
            assert_eq!(file.mode, 0o750);
            assert_eq!(file.name, b"script.sh");
            assert_eq!(file.path, f);
        }
        o => panic!("{o:?}"),
    }
    let e = parse_option(
        "upload",
        Some("missing:/x"),
        &ctx(d.path()),
        Origin::CommandLine,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--upload") && e.contains("cannot read"), "{e}");
    let e = parse_option("upload", Some(".:/x"), &ctx(d.path()), Origin::CommandLine)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn copy_in_reads_tree() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("t/sub")).unwrap();
    std::fs::write(d.path().join("t/sub/f"), b"1").unwrap();
    match one_in(d.path(), "copy-in", "t:/srv") {
        CustomizeOp::CopyIn { tree, dir } => {
            assert_eq!(dir, "/srv");
            assert_eq!(tree.entries.len(), 3);
        }
        o => panic!("{o:?}"),
    }
    let e = err("copy-in", Some("nope:/srv"));
    assert!(e.contains("--copy-in") && e.contains("cannot read"), "{e}");
}

#[test]
fn copy_move() {
    assert_eq!(
        one("copy", "/a:/b"),
        CustomizeOp::Copy {
            src: "/a".into(),
            dest: "/b".into()
        }
    );
    assert_eq!(
        one("move", "/a:/b"),
        CustomizeOp::Move {
            src: "/a".into(),
            dest: "/b".into()
        }
    );
    assert!(err("move", Some("/a")).contains("SOURCE:DEST"));
    assert!(err("copy", Some("/a:b")).contains("must be absolute"));
}

#[test]
fn append_line() {
    assert_eq!(
        one("append-line", "/etc/hosts:10.0.0.1 db:5432"),
        CustomizeOp::AppendLine {
            path: "/etc/hosts".into(),
            line: "10.0.0.1 db:5432".into()
        }
    );
    assert!(err("append-line", Some("/x:a\nb")).contains("one line"));
}

#[test]
fn edit() {
    match one("edit", "/etc/ssh/sshd_config:s/^#?Port .*/Port 2222/") {
        CustomizeOp::Edit { path, expr } => {
            assert_eq!(path, "/etc/ssh/sshd_config");
            assert!(!expr.global);
        }
        o => panic!("{o:?}"),
    }
    let e = err("edit", Some("/etc/x:$_ = uc"));
    assert!(e.starts_with("--edit \"/etc/x:$_ = uc\""), "{e}");
    assert!(e.contains("only perl substitutions"), "{e}");
}

#[test]
fn single_path_options() {
    for (name, f) in [
        (
            "mkdir",
            (|p| CustomizeOp::Mkdir { path: p }) as fn(String) -> CustomizeOp,
        ),
        ("delete", |p| CustomizeOp::Delete { path: p }),
        ("scrub", |p| CustomizeOp::Scrub { path: p }),
        ("touch", |p| CustomizeOp::Touch { path: p }),
        ("truncate", |p| CustomizeOp::Truncate { path: p }),
        ("truncate-recursive", |p| CustomizeOp::TruncateRecursive {
            path: p,
        }),
    ] {
        assert_eq!(one(name, "/var/log/*.log"), f("/var/log/*.log".into()));
        let e = err(name, Some("var"));
        assert!(
            e.contains(&format!("--{name}")) && e.contains("absolute"),
            "{e}"
        );
        assert!(err(name, Some("")).contains("empty guest path"));
    }
}

#[test]
fn link() {
    assert_eq!(
        one("link", "/usr/bin/vim:/usr/bin/vi:/bin/vi"),
        CustomizeOp::Link {
            target: "/usr/bin/vim".into(),
            links: vec!["/usr/bin/vi".into(), "/bin/vi".into()]
        }
    );
    assert_eq!(
        one("link", "../lib:/usr/lib64"),
        CustomizeOp::Link {
            target: "../lib".into(),
            links: vec!["/usr/lib64".into()]
        }
    );
    assert!(err("link", Some("/a")).contains("TARGET:LINK"));
    assert!(err("link", Some(":/a")).contains("empty TARGET"));
}

#[test]
fn chmod() {
    assert_eq!(
        one("chmod", "0755:/usr/local/bin/x"),
        CustomizeOp::Chmod {
            mode: 0o755,
            path: "/usr/local/bin/x".into()
        }
    );
    assert_eq!(
        one("chmod", "04755:/x"),
        CustomizeOp::Chmod {
            mode: 0o4755,
            path: "/x".into()
        }
    );
    assert_eq!(
        one("chmod", "0:/x"),
        CustomizeOp::Chmod {
            mode: 0,
            path: "/x".into()
        }
    );
    let e = err("chmod", Some("755:/x"));
    assert!(e.contains("leading 0 (0755)"), "{e}");
    assert!(err("chmod", Some("0999:/x")).contains("not an octal mode"));
    assert!(err("chmod", Some("u+x:/x")).contains("not an octal mode"));
    assert!(err("chmod", Some("017777:/x")).contains("not an octal mode"));
}

#[test]
fn chown_both_spellings() {
    let want = CustomizeOp::Chown {
        uid: 1000,
        gid: 100,
        path: "/home/u/a:b".into(),
    };
    assert_eq!(one("chown", "1000:100:/home/u/a:b"), want);
    assert_eq!(one("chown", "1000.100:/home/u/a:b"), want);
    let e = err("chown", Some("root:root:/x"));
    assert!(e.contains("UID \"root\" is not a number"), "{e}");
    assert!(err("chown", Some("1:/x")).contains("UID:GID:PATH"));
}

#[test]
fn hostname_timezone() {
    assert_eq!(
        one("hostname", "web-01.example.com"),
        CustomizeOp::Hostname {
            name: "web-01.example.com".into()
        }
    );
    for bad in ["", "-a", "a_b", "a..b", "a b"] {
        let e = err("hostname", Some(bad));
        assert!(e.starts_with("--hostname"), "{e}");
    }
    assert_eq!(
        one("timezone", "America/Argentina/Buenos_Aires"),
        CustomizeOp::Timezone {
            zone: "America/Argentina/Buenos_Aires".into()
        }
    );
    assert_eq!(
        one("timezone", "Etc/GMT+5"),
        CustomizeOp::Timezone {
            zone: "Etc/GMT+5".into()
        }
    );
    for bad in ["", "/etc/passwd", "../x", "Europe/../../x", "a b"] {
        assert!(err("timezone", Some(bad)).contains("zone name"), "{bad}");
    }
}

#[test]
fn passwords() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pw"), b"s3cret\nignored\n").unwrap();
    assert_eq!(
        one("root-password", "password:a:b"),
        CustomizeOp::Password {
            user: "root".into(),
            selector: PasswordSelector::Password("a:b".into())
        }
    );
    assert_eq!(
        one_in(d.path(), "password", "alice:file:pw"),
        CustomizeOp::Password {
            user: "alice".into(),
            selector: PasswordSelector::File {
                path: d.path().join("pw"),
                password: "s3cret".into()
            }
        }
    );
    let sel = |s: &str| match one("password", &format!("bob:{s}")) {
        CustomizeOp::Password { selector, .. } => selector,
        o => panic!("{o:?}"),
    };
    assert_eq!(sel("random"), PasswordSelector::Random);
    assert_eq!(sel("disabled"), PasswordSelector::Disabled);
    assert_eq!(
        sel("locked"),
        PasswordSelector::Locked(Box::new(PasswordSelector::Disabled))
    );
    assert_eq!(
        sel("locked:password:x"),
        PasswordSelector::Locked(Box::new(PasswordSelector::Password("x".into())))
    );
    assert_eq!(
        sel("locked:random"),
        PasswordSelector::Locked(Box::new(PasswordSelector::Random))
    );
    assert!(err("password", Some("bob:plain")).contains("password selector"));
    assert!(err("password", Some("bob")).contains("USER:SELECTOR"));
    assert!(err("password", Some("bob:password:")).contains("empty password"));
    assert!(err("password", Some("a b:random")).contains("not a user name"));
    assert!(err("root-password", Some("file:/nonexistent/pw")).contains("cannot read"));
    assert!(err("root-password", Some("locked:locked")).contains("not a selector"));
    assert_eq!(
        one("password-crypto", "sha512"),
        CustomizeOp::PasswordCrypto {
            crypto: PasswordCrypto::Sha512
        }
    );
    assert_eq!(
        one("password-crypto", "yescrypt"),
        CustomizeOp::PasswordCrypto {
            crypto: PasswordCrypto::Yescrypt
        }
    );
    assert!(err("password-crypto", Some("des")).contains("sha512"));
}

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx user@host";

#[test]
fn ssh_inject() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("home/.ssh")).unwrap();
    std::fs::write(
        d.path().join("home/.ssh/id_ed25519.pub"),
        format!("{KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        d.path().join("home/.ssh/id_ed25519-cert.pub"),
        "ssh-cert AAAA x\n",
    )
    .unwrap();
    std::fs::write(d.path().join("k.pub"), format!("{KEY}\n\n")).unwrap();
    assert_eq!(
        one_in(d.path(), "ssh-inject", "root"),
        CustomizeOp::SshInject {
            user: "root".into(),
            source: SshKeySource::Default(d.path().join("home/.ssh/id_ed25519.pub")),
            key: KEY.into()
        }
    );
    assert_eq!(
        one_in(d.path(), "ssh-inject", "alice:file:k.pub"),
        CustomizeOp::SshInject {
            user: "alice".into(),
            source: SshKeySource::File(d.path().join("k.pub")),
            key: KEY.into()
        }
    );
    assert_eq!(
        one_in(d.path(), "ssh-inject", &format!("alice:string:{KEY}")),
        CustomizeOp::SshInject {
            user: "alice".into(),
            source: SshKeySource::String,
            key: KEY.into()
        }
    );
    assert!(err("ssh-inject", Some("alice:string:notakey")).contains("not an ssh public key"));
    assert!(err("ssh-inject", Some("alice:key:x")).contains("USER:file:KEYFILE"));
    // No key in an empty home.
    assert!(err("ssh-inject", Some("alice")).contains("id*.pub key found"));
}

#[test]
fn firstboot() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("setup.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    match one_in(d.path(), "firstboot", "setup.sh") {
        CustomizeOp::Firstboot { script } => {
            assert_eq!(script.name, "setup.sh");
            assert_eq!(script.script, b"#!/bin/sh\necho hi\n");
        }
        o => panic!("{o:?}"),
    }
    assert!(err("firstboot", Some("missing.sh")).contains("cannot read"));
    assert_eq!(
        one("firstboot-command", "useradd -m bob"),
        CustomizeOp::FirstbootCommand {
            command: "useradd -m bob".into()
        }
    );
    assert!(err("firstboot-command", Some(" ")).contains("empty command"));
    assert_eq!(
        one("firstboot-install", "vim, curl,python3.11"),
        CustomizeOp::FirstbootInstall {
            packages: vec!["vim".into(), "curl".into(), "python3.11".into()]
        }
    );
    assert!(err("firstboot-install", Some("vim,,curl")).contains("empty package"));
    assert!(err("firstboot-install", Some("vim;rm -rf /")).contains("bad package name"));
}

#[test]
fn offline_impossible_and_unknown() {
    let e = err("run-command", Some("yum -y install x"));
    assert!(
        e.contains("cannot be done offline") && e.contains("--firstboot-command"),
        "{e}"
    );
    let e = err("install", Some("vim"));
    assert!(e.contains("--firstboot-install"), "{e}");
    assert!(err("sm-register", None).contains("offline"));
    assert!(err("inject-virtio-win", Some("/x")).contains("Windows"));
    assert!(err("frobnicate", Some("x")).contains("unknown customization option --frobnicate"));
    let d = tempfile::tempdir().unwrap();
    assert!(
        parse_option("no-logfile", None, &ctx(d.path()), Origin::CommandLine)
            .unwrap()
            .is_empty()
    );
    assert!(err("no-logfile", Some("x")).contains("takes no argument"));
}

#[test]
fn commands_file_syntax() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("motd"), b"hi\n").unwrap();
    let text = "# a virt-customize commands file\n\
                \n\
                hostname web-01\n\
                --mkdir /srv/app\n\
                --timezone=Europe/London\n\
                upload motd:/etc/motd\n\
                edit /etc/default/grub:\\\n   s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/\n\
                write /etc/issue:line 1\\\nline 2\r\n\
                  # indented comment\n\
                delete /var/log/*.log";
    let items = parse_commands_str(text, &d.path().join("cmds"), &ctx(d.path())).unwrap();
    let names: Vec<&str> = items.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(
        names,
        [
            "hostname", "mkdir", "timezone", "upload", "edit", "write", "delete"
        ]
    );
    assert_eq!(
        items[5].op,
        CustomizeOp::Write {
            path: "/etc/issue".into(),
            content: "line 1\nline 2".into()
        }
    );
    assert_eq!(
        items[4].origin,
        Origin::File {
            path: d.path().join("cmds"),
            line: 7
        }
    );
    assert_eq!(items[6].source(), "customize:--delete");
    match &items[4].op {
        CustomizeOp::Edit { expr, .. } => {
            let re = expr.regex().unwrap();
            assert_eq!(expr.apply(&re, b"GRUB_TIMEOUT=5\n"), b"GRUB_TIMEOUT=1\n");
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn commands_file_errors_name_line_and_option() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cmds");
    let e = parse_commands_str("hostname ok\nchmod 755:/x\n", &p, &ctx(d.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}:2: --chmod \"755:/x\"", p.display())),
        "{e}"
    );
    let e = parse_commands_str("commands-from-file other\n", &p, &ctx(d.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains(":1: --commands-from-file") && e.contains("inside a commands file"));
    let e = parse_commands_str("run-command reboot\n", &p, &ctx(d.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":1: --run-command: cannot be done offline"),
        "{e}"
    );
    let e = parse_commands_str("hostnam x\n", &p, &ctx(d.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown customization option --hostnam"), "{e}");
}

#[test]
fn commands_from_file_option_expands_in_place() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("c.txt"), "mkdir /a\ntouch /a/b\n").unwrap();
    let items = parse_option(
        "commands-from-file",
        Some("c.txt"),
        &ctx(d.path()),
        Origin::CommandLine,
    )
    .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[1].op,
        CustomizeOp::Touch {
            path: "/a/b".into()
        }
    );
    let e = err("commands-from-file", Some("missing.txt"));
    assert!(
        e.starts_with("--commands-from-file") && e.contains("missing.txt"),
        "{e}"
    );
}

#[test]
fn every_listed_option_parses_or_names_itself() {
    // Each option in the table is known to the parser: a bad argument is a syntax error
    // naming the option, never "unknown option".
    let d = tempfile::tempdir().unwrap();
    for info in CUSTOMIZE_OPTIONS {
        let r = parse_option(
            info.name,
            Some("\u{1}bad"),
            &ctx(d.path()),
            Origin::CommandLine,
        );
        if let Err(e) = r {
            let s = e.to_string();
            assert!(!s.contains("unknown customization option"), "{s}");
            assert!(s.contains(&format!("--{}", info.name)), "{s}");
        }
    }
}
