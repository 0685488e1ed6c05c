//! `enclave-init`: PID 1 of the enclave. See the library's documentation for the contract.
//!
//! In order, each step one line on the console when it fails, after which the enclave ends:
//!
//! 1. mount devtmpfs on `/dev` and make `/dev/console` standard input, output and error;
//! 2. load the kernel modules the boot ramdisk carries (`nsm.ko`, then `modules/*.ko` in name
//!    order; a module already built into the kernel is fine);
//! 3. send the boot heartbeat to the parent (vsock CID 3, port 9000);
//! 4. read `/cmd` and `/env`;
//! 5. mount proc, sysfs, devtmpfs and tmpfs (`/tmp`, `/run`) inside `/rootfs` and enter it;
//! 6. start the command with exactly that environment, reap every child (orphans are
//!    re-parented to PID 1), and when the command exits, end the enclave.
//!
//! The enclave ends with a reboot request, as AWS's init ends it: Nitro terminates the enclave,
//! and the host sees the end and restarts it (the emulator, run with `-no-reboot`, exits).

use std::ffi::{CStr, CString};
use std::fmt::Display;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, VsockAddr, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use init::{HEARTBEAT_PORT, PARENT_CID, heartbeat, parse_cmd, parse_env, read_config};

/// How long each heartbeat attempt may take, and how many are made (a second apart): about half
/// a minute in all, for a parent that is slow to answer (vsock connections time out after 2 s).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
const HEARTBEAT_ATTEMPTS: u32 = 10;

fn main() {
    let code = match boot() {
        Ok(code) => code,
        Err(line) => {
            say(&format!("error: {line}"));
            1
        }
    };
    end(code);
}

/// One line on the console. Never panics (as `println!` would on a write error): PID 1 must
/// not unwind, or the kernel panics.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "enclave-init: {line}");
}

/// One failed step, as its console line.
fn step<T, E: Display>(what: &str, result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn boot() -> Result<i32, String> {
    if std::process::id() != 1 {
        return Err("not process 1: enclave-init runs only as an enclave's init".into());
    }
    console()?;
    say("started");
    load_modules()?;
    // The image is checked before the parent is told the enclave started: a broken image ends
    // here, with its reason on the console.
    let argv = step(
        "/cmd",
        std::fs::File::open("/cmd")
            .and_then(read_config)
            .map_err(|e| e.to_string())
            .and_then(|b| parse_cmd(&b).map_err(|e| e.to_string())),
    )?;
    let env = step(
        "/env",
        std::fs::File::open("/env")
            .and_then(read_config)
            .map_err(|e| e.to_string())
            .and_then(|b| parse_env(&b).map_err(|e| e.to_string())),
    )?;
    // An absolute program must be there (a bare name is looked up in PATH when it starts).
    if let Some(program) = argv.first().filter(|p| p.as_bytes().starts_with(b"/")) {
        let inside =
            Path::new("/rootfs").join(os(program).to_string_lossy().trim_start_matches('/'));
        let executable = std::fs::metadata(&inside)
            .map(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
            .unwrap_or(false);
        if !executable {
            return Err(format!(
                "/cmd: {} is not an executable file in /rootfs",
                inside.display()
            ));
        }
    }
    send_heartbeat()?;
    say("heartbeat answered by the parent");
    enter_rootfs()?;
    run(&argv, &env)
}

fn console() -> Result<(), String> {
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID)?;
    let console = step(
        "/dev/console",
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console"),
    )?;
    step("/dev/console", nix::unistd::dup2_stdin(console.as_fd()))?;
    step("/dev/console", nix::unistd::dup2_stdout(console.as_fd()))?;
    step("/dev/console", nix::unistd::dup2_stderr(console.as_fd()))?;
    Ok(())
}

fn mount_fs(source: &str, target: &str, fstype: &str, flags: MsFlags) -> Result<(), String> {
    if let Err(e) = std::fs::create_dir_all(target) {
        return Err(format!("mkdir {target}: {e}"));
    }
    step(
        &format!("mount {fstype} on {target}"),
        mount(Some(source), target, Some(fstype), flags, None::<&str>),
    )
}

fn load_modules() -> Result<(), String> {
    let mut modules = Vec::new();
    if Path::new("/nsm.ko").exists() {
        modules.push(Path::new("/nsm.ko").to_path_buf());
    }
    if let Ok(dir) = std::fs::read_dir("/modules") {
        let mut more: Vec<_> = dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ko"))
            .collect();
        more.sort();
        modules.extend(more);
    }
    for module in modules {
        let what = format!("load {}", module.display());
        let file = step(&what, std::fs::File::open(&module))?;
        match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
        say(&format!("loaded {}", module.display()));
    }
    Ok(())
}

fn send_heartbeat() -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=HEARTBEAT_ATTEMPTS {
        match try_heartbeat() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if attempt < HEARTBEAT_ATTEMPTS {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Err(format!(
        "heartbeat to the parent (vsock {PARENT_CID}:{HEARTBEAT_PORT}), {HEARTBEAT_ATTEMPTS} attempts: {last}"
    ))
}

fn try_heartbeat() -> Result<(), String> {
    let fd = step(
        "vsock socket",
        socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        ),
    )?;
    let timeout = TimeVal::new(i64::try_from(HEARTBEAT_TIMEOUT.as_secs()).unwrap_or(5), 0);
    step(
        "vsock timeout",
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout),
    )?;
    step(
        "vsock timeout",
        setsockopt(&fd, sockopt::SendTimeout, &timeout),
    )?;
    step(
        "connect",
        connect(fd.as_raw_fd(), &VsockAddr::new(PARENT_CID, HEARTBEAT_PORT)),
    )?;
    let stream = std::fs::File::from(fd);
    step("heartbeat", heartbeat(&stream))
}

fn enter_rootfs() -> Result<(), String> {
    if !Path::new("/rootfs").is_dir() {
        return Err("/rootfs: no such directory (the application ramdisk is missing)".into());
    }
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/rootfs/proc", "proc", nodev)?;
    mount_fs("sysfs", "/rootfs/sys", "sysfs", nodev)?;
    mount_fs("devtmpfs", "/rootfs/dev", "devtmpfs", MsFlags::MS_NOSUID)?;
    mount_fs(
        "tmpfs",
        "/rootfs/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    mount_fs(
        "tmpfs",
        "/rootfs/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    step("chroot /rootfs", std::os::unix::fs::chroot("/rootfs"))?;
    step("chdir /", std::env::set_current_dir("/"))
}

fn run(argv: &[CString], env: &[CString]) -> Result<i32, String> {
    let (program, args) = argv.split_first().ok_or("/cmd: no command")?;
    let program_text = program.to_string_lossy().into_owned();
    let mut command = std::process::Command::new(os(program));
    command.args(args.iter().map(|a| os(a))).env_clear();
    for var in env {
        let bytes = var.as_bytes();
        if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
            let (name, value) = bytes.split_at(eq);
            command.env(os_bytes(name), os_bytes(value.get(1..).unwrap_or_default()));
        }
    }
    let child = step(&format!("start {program_text}"), command.spawn())?;
    let pid = Pid::from_raw(step("pid", i32::try_from(child.id()))?);
    say(&format!("started {program_text} (pid {pid})"));
    // Reap every child; the command's own exit ends the enclave.
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => {
                say(&format!("{program_text} exited with status {code}"));
                return Ok(code);
            }
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                say(&format!("{program_text} was killed by {signal}"));
                return Ok(1);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

fn os(s: &CStr) -> &std::ffi::OsStr {
    os_bytes(s.to_bytes())
}

fn os_bytes(b: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}

/// End the enclave. Never returns: PID 1 must not exit (the kernel would panic).
fn end(code: i32) -> ! {
    say(&format!("ending the enclave (status {code})"));
    nix::unistd::sync();
    loop {
        let Err(e) = reboot(RebootMode::RB_AUTOBOOT);
        say(&format!("error: reboot: {e}"));
        std::thread::sleep(Duration::from_secs(1));
    }
}
