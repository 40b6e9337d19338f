/*
 * vsock: a tiny AF_VSOCK client and server for wirt's default guest (busybox has no vsock
 * support). See guest/README.md.
 *
 *   vsock connect CID PORT  connect to CID:PORT (the host is CID 2); copy stdin to the
 *                           socket, then shut down its write side; copy the socket to
 *                           stdout until the peer closes
 *   vsock listen PORT       accept one connection on PORT, then copy as `connect` does
 *   vsock echo PORT         accept one connection on PORT and send back all it receives
 *
 * listen and echo print "vsock: listening on port PORT" to stderr once connections can
 * be made. Exit status 0 on success, 1 when a system call fails (the message names it and
 * the errno), 2 on bad usage.
 *
 * Freestanding on purpose: no libc (the initramfs has none besides busybox's, linked into
 * it), raw x86-64 Linux system calls. crates/image compiles it with the host's gcc when
 * it builds the image (flags in crates/image/src/guest_tools.rs); the source is part of
 * the image's cache key, the binary is never committed.
 */

#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_poll 7
#define SYS_socket 41
#define SYS_connect 42
#define SYS_accept 43
#define SYS_shutdown 48
#define SYS_bind 49
#define SYS_listen 50
#define SYS_exit_group 231

#define AF_VSOCK 40
#define SOCK_STREAM 1
#define SHUT_WR 1
#define VMADDR_CID_ANY 0xffffffffu
#define POLLIN 0x001
#define POLLERR 0x008
#define POLLHUP 0x010
#define EINTR 4

struct sockaddr_vm {
    unsigned short svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_flags;
    unsigned char svm_zero[3];
};

struct pollfd {
    int fd;
    short events;
    short revents;
};

static long sys3(long n, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

static char buf[16384];

static unsigned long str_len(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

static void put(int fd, const char *s)
{
    sys3(SYS_write, fd, (long)s, (long)str_len(s));
}

static void put_uint(int fd, unsigned long v)
{
    char digits[24];
    int i = sizeof digits;
    digits[--i] = 0;
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    put(fd, digits + i);
}

static __attribute__((noreturn)) void quit(int status)
{
    for (;;)
        sys3(SYS_exit_group, status, 0, 0);
}

/* Exits with status 1 if `ret` is a failed system call's result. */
static long check(long ret, const char *what)
{
    if (ret < 0 && ret > -4096) {
        put(2, "vsock: ");
        put(2, what);
        put(2, " failed: errno ");
        put_uint(2, (unsigned long)-ret);
        put(2, "\n");
        quit(1);
    }
    return ret;
}

static __attribute__((noreturn)) void usage(void)
{
    put(2, "usage: vsock connect CID PORT | vsock listen PORT | vsock echo PORT\n");
    quit(2);
}

/* Decimal text to a 32-bit number; anything else is a usage error. */
static unsigned int number(const char *s)
{
    unsigned long v = 0;
    if (!*s)
        usage();
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            usage();
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > 0xffffffffu)
            usage();
    }
    return (unsigned int)v;
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

/* 0 at end of file, else the bytes read; retries interrupted reads. */
static long read_some(int fd, const char *what)
{
    long n;
    do
        n = sys3(SYS_read, fd, (long)buf, sizeof buf);
    while (n == -EINTR);
    return check(n, what);
}

static void write_all(int fd, long len, const char *what)
{
    long done = 0;
    while (done < len) {
        long n = sys3(SYS_write, fd, (long)(buf + done), len - done);
        if (n == -EINTR)
            continue;
        done += check(n, what);
    }
}

static void address(struct sockaddr_vm *a, unsigned int cid, unsigned int port)
{
    a->svm_family = AF_VSOCK;
    a->svm_reserved1 = 0;
    a->svm_port = port;
    a->svm_cid = cid;
    a->svm_flags = 0;
    a->svm_zero[0] = a->svm_zero[1] = a->svm_zero[2] = 0;
}

/* stdin -> sock (then shutdown of its write side), sock -> stdout until the peer closes. */
static void copy(int sock)
{
    struct pollfd fds[2];
    fds[0].fd = 0;
    fds[0].events = POLLIN;
    fds[1].fd = sock;
    fds[1].events = POLLIN;
    for (;;) {
        fds[0].revents = fds[1].revents = 0;
        long ready = sys3(SYS_poll, (long)fds, 2, -1);
        if (ready == -EINTR)
            continue;
        check(ready, "poll");
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            long n = read_some(0, "read stdin");
            if (n == 0) {
                check(sys3(SYS_shutdown, sock, SHUT_WR, 0), "shutdown");
                fds[0].fd = -1; /* poll ignores negative descriptors */
            } else {
                write_all(sock, n, "write socket");
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            long n = read_some(sock, "read socket");
            if (n == 0)
                return;
            write_all(1, n, "write stdout");
        }
    }
}

/* Everything the peer sends goes back to it; ends when the peer stops sending. */
static void echo(int sock)
{
    long n;
    while ((n = read_some(sock, "read socket")) > 0)
        write_all(sock, n, "write socket");
    check(sys3(SYS_shutdown, sock, SHUT_WR, 0), "shutdown");
}

/* Listens on `port`, announces it, returns the first connection. */
static int accept_one(unsigned int port)
{
    struct sockaddr_vm a;
    int sock = (int)check(sys3(SYS_socket, AF_VSOCK, SOCK_STREAM, 0), "socket");
    address(&a, VMADDR_CID_ANY, port);
    check(sys3(SYS_bind, sock, (long)&a, sizeof a), "bind");
    check(sys3(SYS_listen, sock, 1, 0), "listen");
    put(2, "vsock: listening on port ");
    put_uint(2, port);
    put(2, "\n");
    long conn;
    do
        conn = sys3(SYS_accept, sock, 0, 0);
    while (conn == -EINTR);
    check(conn, "accept");
    sys3(SYS_close, sock, 0, 0);
    return (int)conn;
}

static __attribute__((noreturn, used)) void start(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    if (argc == 4 && str_eq(argv[1], "connect")) {
        struct sockaddr_vm a;
        unsigned int cid = number(argv[2]);
        unsigned int port = number(argv[3]);
        int sock = (int)check(sys3(SYS_socket, AF_VSOCK, SOCK_STREAM, 0), "socket");
        address(&a, cid, port);
        long r;
        do
            r = sys3(SYS_connect, sock, (long)&a, sizeof a);
        while (r == -EINTR);
        check(r, "connect");
        copy(sock);
    } else if (argc == 3 && str_eq(argv[1], "listen")) {
        copy(accept_one(number(argv[2])));
    } else if (argc == 3 && str_eq(argv[1], "echo")) {
        echo(accept_one(number(argv[2])));
    } else {
        usage();
    }
    quit(0);
}

/* The kernel enters here with argc at (%rsp), argv after it; no return address. */
__asm__(".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start\n"
        "  hlt\n");
