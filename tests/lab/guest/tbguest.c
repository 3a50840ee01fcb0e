/*
 * tbguest - workload of the kvm.migration lab test guest.
 *
 * Runs as PID 1 (exec'd by /init) in a tiny initramfs-only guest and proves
 * that a live migration kept the guest running and its disk writes intact:
 *
 *   - tick loop (main thread, absolute 1 s CLOCK_MONOTONIC schedule): for
 *     tick n = 1, 2, 3, ... it FIRST writes a 512-byte record
 *     "REC <n> boot=<id> up=<ms>\n" (zero padded) to /dev/vda at sector
 *     RECORD_BASE_SECTOR + n with O_DIRECT|O_SYNC, THEN prints
 *     "TICK <n> boot=<id> up=<s.mmm>" on the console (ttyS0), so every
 *     printed tick is already durable on disk.  A failed write prints
 *     "TB-DISKERR <n> <error>" instead of the tick.
 *   - memory dirtier thread: keeps tb.dirty_mb MiB of memory changing at
 *     tb.dirty_rate MiB/s (0 = as fast as it can).  Every 4 KiB page gets the
 *     64-bit pass counter and its page index, so its content differs on every
 *     pass (content-sampling dirty-rate measurement sees it).
 *   - control thread on /dev/ttyS1 (raw): line commands
 *       dirty <MB> <RATE> -> OK dirty <MB> <RATE>
 *       status            -> STATUS tick=<n> boot=<id> dirty_mb=<N> dirty_rate=<R> up=<s.mmm>
 *       sync              -> OK sync
 *       poweroff          -> OK poweroff, then power off
 *       anything else     -> ERR <line>
 *
 * Build: gcc -static -O2 -pthread -o tbguest tbguest.c
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define RECORD_BASE_SECTOR 2048ULL
#define SECTOR_SIZE 512
#define PAGE_SIZE_TB 4096UL
#define MIB (1024UL * 1024UL)
#define PAGES_PER_MIB (MIB / PAGE_SIZE_TB)
#define DISK_PATH "/dev/vda"
#define CTL_PATH "/dev/ttyS1"
#define SLICE_NS 10000000LL         /* dirtier pacing slice: 10 ms */
#define NSEC 1000000000LL
#define MEM_RESERVE_MIB 40          /* left to the kernel when sizing the dirtier */

static char boot_id[9] = "00000000";
static uint64_t last_tick;          /* atomic: last tick printed */
static int disk_fd = -1;            /* atomic: O_DIRECT fd of /dev/vda */

/* dirtier configuration, protected by dmu */
static pthread_mutex_t dmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dcv = PTHREAD_COND_INITIALIZER;
static long want_mb, want_rate;
static unsigned long dgen;          /* bumped on every change; read atomically */
static size_t dirty_bytes_now;      /* bytes currently mapped by the dirtier */

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------ */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NSEC + ts.tv_nsec;
}

static struct timespec ns_to_ts(int64_t ns)
{
    struct timespec ts = { .tv_sec = ns / NSEC, .tv_nsec = ns % NSEC };
    return ts;
}

static void sleep_until(int64_t deadline_ns)
{
    struct timespec ts = ns_to_ts(deadline_ns);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += w;
        len -= (size_t)w;
    }
}

/* One console line per write(2), so concurrent lines never interleave. */
static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    pthread_mutex_lock(&out_mu);
    write_all(1, buf, (size_t)n);
    pthread_mutex_unlock(&out_mu);
}

static void fmt_up(char *buf, size_t len, int64_t ns)
{
    long long ms = ns / 1000000;
    snprintf(buf, len, "%lld.%03lld", ms / 1000, ms % 1000);
}

/* ------------------------------------------------------------------------ */

static void read_boot_id(void)
{
    char buf[64] = { 0 };
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
    ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    int ok = r >= 8;
    for (int i = 0; ok && i < 8; i++)
        ok = isxdigit((unsigned char)buf[i]);
    if (ok) {
        for (int i = 0; i < 8; i++)
            boot_id[i] = (char)tolower((unsigned char)buf[i]);
    } else {
        snprintf(boot_id, sizeof boot_id, "%08llx",
                 (unsigned long long)(mono_ns() ^ (int64_t)time(NULL)) & 0xffffffffULL);
    }
    boot_id[8] = '\0';
}

static long cmdline_long(const char *key, long dflt)
{
    char buf[4096] = { 0 };
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        return dflt;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return dflt;
    size_t klen = strlen(key);
    long val = dflt;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(tok, key, klen) == 0 && tok[klen] == '=') {
            char *end;
            long v = strtol(tok + klen + 1, &end, 10);
            if (end != tok + klen + 1 && *end == '\0' && v >= 0)
                val = v;   /* last occurrence wins, like the kernel */
        }
    }
    return val;
}

/* MiB the dirtier may use: free RAM plus what it already holds, minus a reserve. */
static long max_dirty_mb(void)
{
    struct sysinfo si;
    if (sysinfo(&si) != 0)
        return 0;
    unsigned long long freeb = (unsigned long long)si.freeram * si.mem_unit;
    freeb += __atomic_load_n(&dirty_bytes_now, __ATOMIC_RELAXED);
    long mb = (long)(freeb / MIB) - MEM_RESERVE_MIB;
    return mb > 0 ? mb : 0;
}

/* ------------------------------------------------------------------------ */
/* memory dirtier */

static uint64_t pass_counter;

static inline void dirty_page(volatile unsigned char *mem, size_t idx, uint64_t pass)
{
    volatile uint64_t *p = (volatile uint64_t *)(mem + idx * PAGE_SIZE_TB);
    p[0] = pass;
    p[1] = (uint64_t)idx;
}

static void set_self_nice(int nice)
{
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

static void *dirtier_main(void *arg)
{
    (void)arg;
    set_self_nice(19);   /* the tick loop must win the (single) vCPU */
    unsigned char *mem = NULL;
    size_t len = 0;

    for (;;) {
        pthread_mutex_lock(&dmu);
        while (want_mb == 0) {
            if (mem) {
                munmap(mem, len);
                mem = NULL;
                len = 0;
                __atomic_store_n(&dirty_bytes_now, 0, __ATOMIC_RELAXED);
            }
            pthread_cond_wait(&dcv, &dmu);
        }
        size_t want_len = (size_t)want_mb * MIB;
        long rate = want_rate;
        unsigned long gen = dgen;
        pthread_mutex_unlock(&dmu);

        if (want_len != len) {
            if (mem)
                munmap(mem, len);
            mem = NULL;
            len = 0;
            __atomic_store_n(&dirty_bytes_now, 0, __ATOMIC_RELAXED);
            void *m = mmap(NULL, want_len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) {
                out("TB-DIRTY-ERR mmap %zu MiB: %s\n", want_len / MIB, strerror(errno));
                pthread_mutex_lock(&dmu);
                if (dgen == gen)
                    want_mb = 0;
                pthread_mutex_unlock(&dmu);
                continue;
            }
            mem = m;
            len = want_len;
            __atomic_store_n(&dirty_bytes_now, len, __ATOMIC_RELAXED);
            uint64_t pass = ++pass_counter;
            for (size_t i = 0; i < len / PAGE_SIZE_TB; i++)   /* touch once */
                dirty_page(mem, i, pass);
        }

        size_t npages = len / PAGE_SIZE_TB;
        size_t idx = 0;
        uint64_t pass = ++pass_counter;
#define NEXT_PAGE()                        \
    do {                                   \
        dirty_page(mem, idx, pass);        \
        if (++idx == npages) {             \
            idx = 0;                       \
            pass = ++pass_counter;         \
        }                                  \
    } while (0)

        if (rate == 0) {
            /* flat out; look for a new configuration every 256 pages */
            while (__atomic_load_n(&dgen, __ATOMIC_ACQUIRE) == gen) {
                for (int k = 0; k < 256; k++)
                    NEXT_PAGE();
            }
        } else {
            /* paced: pages due = rate * elapsed, checked every 10 ms slice */
            double pages_per_ns = (double)rate * PAGES_PER_MIB / (double)NSEC;
            int64_t t0 = mono_ns(), deadline = t0;
            uint64_t done = 0;
            uint64_t max_backlog = (uint64_t)(pages_per_ns * 2 * SLICE_NS) + 1;
            while (__atomic_load_n(&dgen, __ATOMIC_ACQUIRE) == gen) {
                uint64_t due = (uint64_t)(pages_per_ns * (double)(mono_ns() - t0));
                if (due > done + max_backlog)
                    done = due - max_backlog;  /* fell behind (e.g. paused): drop backlog */
                while (done < due) {
                    NEXT_PAGE();
                    done++;
                }
                deadline += SLICE_NS;
                int64_t now = mono_ns();
                if (deadline < now)
                    deadline = now;
                sleep_until(deadline);
            }
        }
#undef NEXT_PAGE
    }
    return NULL;
}

/* returns NULL on success, else an error text */
static const char *set_dirty(long mb, long rate)
{
    static char err[128];
    if (mb < 0 || rate < 0)
        return "negative value";
    long max = max_dirty_mb();
    if (mb > max) {
        snprintf(err, sizeof err, "not enough memory (at most %ld MiB)", max);
        return err;
    }
    pthread_mutex_lock(&dmu);
    want_mb = mb;
    want_rate = rate;
    __atomic_add_fetch(&dgen, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&dcv);
    pthread_mutex_unlock(&dmu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* disk records */

static int open_disk(void)
{
    int fd = __atomic_load_n(&disk_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0)
        return fd;
    fd = open(DISK_PATH, O_RDWR | O_DIRECT | O_SYNC | O_CLOEXEC);
    if (fd >= 0)
        __atomic_store_n(&disk_fd, fd, __ATOMIC_RELEASE);
    return fd;
}

/* 0 on success, else errno */
static int write_record(unsigned char *buf, uint64_t n, int64_t up_ns)
{
    int fd = open_disk();
    if (fd < 0)
        return errno ? errno : EIO;
    memset(buf, 0, SECTOR_SIZE);
    snprintf((char *)buf, SECTOR_SIZE, "REC %llu boot=%s up=%lld\n",
             (unsigned long long)n, boot_id, (long long)(up_ns / 1000000));
    off_t off = (off_t)((RECORD_BASE_SECTOR + n) * SECTOR_SIZE);
    for (;;) {
        ssize_t w = pwrite(fd, buf, SECTOR_SIZE, off);
        if (w == SECTOR_SIZE)
            return 0;
        if (w < 0 && errno == EINTR)
            continue;
        return w < 0 ? errno : EIO;   /* short write */
    }
}

/* ------------------------------------------------------------------------ */
/* control channel on ttyS1 */

static void ctl_reply(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_reply(int fd, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf - 1)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    write_all(fd, buf, (size_t)n);
}

static int parse_nonneg(const char *s, long *v)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < 0)
        return -1;
    *v = x;
    return 0;
}

static void handle_command(int fd, char *line)
{
    char *args[4];
    int nargs = 0;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", line);
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok && nargs < 4; tok = strtok_r(NULL, " \t", &save))
        args[nargs++] = tok;
    if (nargs == 0)
        return;

    if (strcmp(args[0], "dirty") == 0 && nargs == 3) {
        long mb, rate;
        if (parse_nonneg(args[1], &mb) || parse_nonneg(args[2], &rate)) {
            ctl_reply(fd, "ERR %s", line);
            return;
        }
        const char *err = set_dirty(mb, rate);
        if (err)
            ctl_reply(fd, "ERR %s: %s", line, err);
        else
            ctl_reply(fd, "OK dirty %ld %ld", mb, rate);
    } else if (strcmp(args[0], "status") == 0 && nargs == 1) {
        char up[32];
        fmt_up(up, sizeof up, mono_ns());
        pthread_mutex_lock(&dmu);
        long mb = want_mb, rate = want_rate;
        pthread_mutex_unlock(&dmu);
        ctl_reply(fd, "STATUS tick=%llu boot=%s dirty_mb=%ld dirty_rate=%ld up=%s",
                  (unsigned long long)__atomic_load_n(&last_tick, __ATOMIC_ACQUIRE),
                  boot_id, mb, rate, up);
    } else if (strcmp(args[0], "sync") == 0 && nargs == 1) {
        sync();
        int dfd = __atomic_load_n(&disk_fd, __ATOMIC_ACQUIRE);
        if (dfd >= 0)
            fsync(dfd);
        ctl_reply(fd, "OK sync");
    } else if (strcmp(args[0], "poweroff") == 0 && nargs == 1) {
        ctl_reply(fd, "OK poweroff");
        tcdrain(fd);
        out("TB-POWEROFF boot=%s\n", boot_id);
        sync();
        reboot(RB_POWER_OFF);
        out("TB-POWEROFF-FAILED %s\n", strerror(errno));
    } else {
        ctl_reply(fd, "ERR %s", line);
    }
}

static void *control_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = open(CTL_PATH, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
            out("TB-CTLERR open %s: %s\n", CTL_PATH, strerror(errno));
            sleep(5);
            continue;
        }
        struct termios t;
        if (tcgetattr(fd, &t) == 0) {
            cfmakeraw(&t);
            t.c_cflag |= CLOCAL | CREAD;
            t.c_cflag &= ~CRTSCTS;
            t.c_cc[VMIN] = 1;
            t.c_cc[VTIME] = 0;
            cfsetispeed(&t, B115200);
            cfsetospeed(&t, B115200);
            tcsetattr(fd, TCSANOW, &t);
        }
        char line[256];
        size_t len = 0;
        int overflow = 0;
        for (;;) {
            char buf[128];
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            for (ssize_t i = 0; i < r; i++) {
                char c = buf[i];
                if (c == '\n' || c == '\r') {
                    if (len > 0 && !overflow) {
                        line[len] = '\0';
                        /* strip trailing blanks */
                        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
                            line[--len] = '\0';
                        char *l = line;
                        while (*l == ' ' || *l == '\t')
                            l++;
                        if (*l)
                            handle_command(fd, l);
                    } else if (overflow) {
                        ctl_reply(fd, "ERR line too long");
                    }
                    len = 0;
                    overflow = 0;
                } else if (len < sizeof line - 1) {
                    line[len++] = isprint((unsigned char)c) ? c : '?';
                } else {
                    overflow = 1;
                }
            }
        }
        close(fd);
        sleep(1);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */

int main(void)
{
    read_boot_id();
    out("TB-BOOT boot=%s\n", boot_id);

    long mb = cmdline_long("tb.dirty_mb", 0);
    long rate = cmdline_long("tb.dirty_rate", 0);
    if (set_dirty(mb, rate) != NULL) {
        out("TB-DIRTY-ERR requested dirty_mb=%ld but at most %ld MiB is free; dirtier off\n",
            mb, max_dirty_mb());
        mb = 0;
        set_dirty(0, rate);
    }

    unsigned char *rec;
    if (posix_memalign((void **)&rec, PAGE_SIZE_TB, PAGE_SIZE_TB) != 0) {
        out("TB-FATAL posix_memalign\n");
        for (;;)
            pause();
    }
    if (open_disk() < 0)
        out("TB-DISKERR 0 open %s: %s\n", DISK_PATH, strerror(errno));

    pthread_t th;
    if (pthread_create(&th, NULL, dirtier_main, NULL) != 0)
        out("TB-FATAL cannot start dirtier thread\n");
    if (pthread_create(&th, NULL, control_main, NULL) != 0)
        out("TB-FATAL cannot start control thread\n");

    /* the tick loop preempts the dirtier at once when its deadline comes */
    struct sched_param sp = { .sched_priority = 10 };
    if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0)
        set_self_nice(-10);

    out("TB-READY boot=%s dirty_mb=%ld dirty_rate=%ld\n", boot_id, mb, rate);

    int64_t next = mono_ns();
    for (uint64_t n = 1;; n++) {
        next += NSEC;
        sleep_until(next);
        int64_t now = mono_ns();
        if (now - next > NSEC)   /* far behind (guest was paused): re-base, keep numbering */
            next = now;
        int err = write_record(rec, n, now);
        if (err) {
            out("TB-DISKERR %llu %s\n", (unsigned long long)n, strerror(err));
        } else {
            char up[32];
            fmt_up(up, sizeof up, now);
            out("TICK %llu boot=%s up=%s\n", (unsigned long long)n, boot_id, up);
        }
        __atomic_store_n(&last_tick, n, __ATOMIC_RELEASE);
    }
}
