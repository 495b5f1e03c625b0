//! What goes into the stand-ins besides busybox: the upstream busybox /etc/passwd and /etc/group, the
//! shell programs standing in for nginx, httpd-foreground and (when busybox has no ipcs) ipcs, and `nnp`,
//! a static x86-64 program assembled here (so that no compiler is needed to build the images).

/// `/etc/passwd` of the upstream busybox images (what `USER www-data` and `RunAsUsername: nobody` resolve).
pub(super) const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\nsync:x:4:100:sync:/bin:/bin/sync\nmail:x:8:8:mail:/var/spool/mail:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\noperator:x:37:37:Operator:/var:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n";

/// `/etc/group` of the upstream busybox images.
pub(super) const GROUP: &str = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\nlp:x:7:\nmail:x:8:\nkmem:x:9:\nwheel:x:10:root\ncdrom:x:11:\ndialout:x:18:\nfloppy:x:19:\nvideo:x:28:\naudio:x:29:\ntape:x:32:\nwww-data:x:33:\noperator:x:37:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\nlock:x:54:\nnetdev:x:82:\nusers:x:100:\nnogroup:x:65534:\n";

/// Only for the fallback busybox (Debian's busybox-static), which has no `ipcs` applet (upstream busybox
/// and the one `conformance/busybox.sh` builds have): critest's HostIpc specs run `ipcs -m` and look for a
/// segment ID, which /proc/sysvipc/shm lists for the caller's IPC namespace.
pub(super) const IPCS: &str = r#"#!/bin/sh
# crust stand-in for ipcs (Debian's busybox-static has none): System V shared memory segments of this
# IPC namespace, read from /proc/sysvipc/shm, in the shape of `ipcs -m`. Every option prints the same.
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
awk 'NR > 1 { printf "0x%08x %-10s %-10s %-10s %-10s %-10s\n", $1, $2, $8, $3, $4, $7 }' /proc/sysvipc/shm
echo
"#;

/// The nginx stand-in: busybox httpd in the foreground under a shell named `nginx` (a script's process
/// name is the script's), which writes its PID to /var/run/nginx.pid and stops on TERM, INT or QUIT.
pub(super) fn nginx_script(port: u16) -> String {
    format!(
        r#"#!/bin/sh
# crust stand-in for nginx: busybox httpd serves /usr/share/nginx/html on port {port} in the foreground.
# This shell stays httpd's parent so that a process named "nginx" exists (pidof nginx) and
# /var/run/nginx.pid holds its PID; its arguments put "master process" in its command line.
mkdir -p /var/run
echo $$ > /var/run/nginx.pid
httpd -f -p {port} -h /usr/share/nginx/html &
server=$!
trap 'kill "$server" 2>/dev/null; rm -f /var/run/nginx.pid; exit 0' TERM INT QUIT
wait "$server"
"#
    )
}

/// The httpd stand-in: says "httpd" on stdout (critest looks for it in the container log), then runs
/// busybox httpd on port 80 until TERM, INT or WINCH (the upstream image's stop signal).
pub(super) const HTTPD_FOREGROUND: &str = r#"#!/bin/sh
# crust stand-in for httpd-foreground: busybox httpd serves /usr/local/apache2/htdocs on port 80.
echo "httpd: crust stand-in serving /usr/local/apache2/htdocs on port 80"
httpd -f -p 80 -h /usr/local/apache2/htdocs &
server=$!
trap 'kill "$server" 2>/dev/null; exit 0' TERM INT WINCH
wait "$server"
"#;

/// x86-64 machine code of `nnp`: `geteuid()`, then one `write(1, "Effective uid: <euid>\n")`, then
/// `exit(0)` (position-independent; source in the comment of [`nnp_elf`]).
const NNP_CODE: [u8; 108] = [
    0x48, 0x83, 0xec, 0x40, 0xb8, 0x6b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8d, 0x7c, 0x24, 0x3f, 0xc6,
    0x07, 0x0a, 0xb9, 0x0a, 0x00, 0x00, 0x00, 0x31, 0xd2, 0xf7, 0xf1, 0x80, 0xc2, 0x30, 0x48, 0xff, 0xcf,
    0x88, 0x17, 0x85, 0xc0, 0x75, 0xf0, 0xb9, 0x0f, 0x00, 0x00, 0x00, 0x48, 0x29, 0xcf, 0x49, 0x89, 0xf8,
    0x48, 0x8d, 0x35, 0x23, 0x00, 0x00, 0x00, 0xfc, 0xf3, 0xa4, 0x4c, 0x89, 0xc6, 0x48, 0x8d, 0x54, 0x24,
    0x40, 0x48, 0x29, 0xf2, 0xbf, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x31,
    0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05, b'E', b'f', b'f', b'e', b'c', b't', b'i', b'v', b'e',
    b' ', b'u', b'i', b'd', b':', b' ',
];

/// A static x86-64 ELF executable of the e2e `nonewprivs` image's program: prints `Effective uid: N`
/// (its effective UID), so that installed setuid-root it shows whether no_new_privs stopped the setuid.
/// One PT_LOAD segment (the whole file at 0x400000), entry right after the headers. The code is:
///
/// ```text
/// sub $64,%rsp; mov $107,%eax; syscall            # geteuid
/// lea 63(%rsp),%rdi; movb $10,(%rdi); mov $10,%ecx
/// 1: xor %edx,%edx; div %ecx; add $48,%dl; dec %rdi; mov %dl,(%rdi); test %eax,%eax; jnz 1b
/// mov $15,%ecx; sub %rcx,%rdi; mov %rdi,%r8; lea prefix(%rip),%rsi; cld; rep movsb
/// mov %r8,%rsi; lea 64(%rsp),%rdx; sub %rsi,%rdx; mov $1,%edi; mov $1,%eax; syscall   # write
/// xor %edi,%edi; mov $60,%eax; syscall                                                # exit(0)
/// prefix: .ascii "Effective uid: "
/// ```
pub fn nnp_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + NNP_CODE.len() as u64;
    let mut f = Vec::with_capacity(total as usize);
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    for v in [0, BASE, BASE, total, total, 0x1000u64] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&NNP_CODE);
    f
}
