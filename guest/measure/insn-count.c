/*
 * A QEMU TCG plugin that counts guest instructions from reset to the first execution of
 * the `out` instruction at a given guest address (the boot-timer write of wirt's
 * port-writer program, i.e. "user space is ready"), and to the end of the run.
 *
 * Used to choose the default guest's kernel (guest/README.md). Debian's QEMU supports
 * plugins but ships none, so this one is compiled from here:
 *
 *   gcc -shared -fPIC -O2 -o insn-count.so insn-count.c
 *   qemu-system-x86_64 ... -plugin ./insn-count.so,ready=0x400093 -d plugin
 *
 * The plugin API is declared below as QEMU 7.2 defines it (include/qemu/qemu-plugin.h,
 * QEMU_PLUGIN_VERSION 1), so no QEMU headers are needed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int, void *);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t, void *);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op,
                                              void *, uint64_t);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *,
                                            qemu_plugin_vcpu_udata_cb_t,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);
void qemu_plugin_outs(const char *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Counted per translation block when the block starts (single vCPU: run with -smp 1). */
static uint64_t executed;
static uint64_t at_ready;
static uint64_t ready_address;

static void on_ready(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    if (!at_ready) {
        at_ready = executed;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *bytes = qemu_plugin_insn_data(insn);
        /* 0xee is `out dx, al`. */
        if (qemu_plugin_insn_vaddr(insn) == ready_address && bytes[0] == 0xee) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_ready, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *udata)
{
    char line[160];
    (void)id;
    (void)udata;
    snprintf(line, sizeof line, "insn-count: ready=%" PRIu64 " total=%" PRIu64 "\n",
             at_ready, executed);
    qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int
qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "ready=", 6) == 0) {
            ready_address = strtoull(argv[i] + 6, NULL, 0);
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
