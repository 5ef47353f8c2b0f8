/* Cortex-M test harness for a devicefit model under QEMU + semihosting: runs model_invoke on the
 * TEST_COUNT inputs of test_data.h, prints every output byte and the number of bytes that differ from
 * the integer reference's outputs, exits 0 when all match, 1 otherwise (99: CPU fault, see startup.c). */
#include <stdint.h>
#include <stddef.h>
#include "semihost.h"
#include "model.h"
#include "test_data.h"

/* -nostdlib: GCC may still emit calls to these for struct copies or loops. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst; const uint8_t *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

__attribute__((optimize("no-tree-loop-distribute-patterns")))
void *memset(void *dst, int v, size_t n)
{
    uint8_t *d = dst;
    while (n--) *d++ = (uint8_t)v;
    return dst;
}

static int8_t output[MODEL_OUTPUT_BYTES];

int main(void)
{
    long long mismatches = 0;
    int t, i;
    for (t = 0; t < TEST_COUNT; ++t) {
        if (model_invoke(TEST_INPUTS[t], output) != 0) return 2;
        sh_puts("out");
        for (i = 0; i < MODEL_OUTPUT_BYTES; ++i) {
            sh_puts(" ");
            sh_put_int(output[i]);
            mismatches += output[i] != TEST_EXPECTED[t][i];
        }
        sh_puts("\n");
    }
    sh_puts("mismatches=");
    sh_put_int(mismatches);
    sh_puts(mismatches ? "\nFAIL\n" : "\nPASS\n");
    return mismatches ? 1 : 0;
}
