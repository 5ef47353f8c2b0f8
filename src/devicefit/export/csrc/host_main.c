/* Host test harness for a devicefit model: reads int8 inputs from stdin (MODEL_INPUT_BYTES each),
 * writes one int8 output (MODEL_OUTPUT_BYTES) per input to stdout. Exit 0 on success. */
#include <stdio.h>
#include <stdint.h>
#include "model.h"

int main(void)
{
    static int8_t in[MODEL_INPUT_BYTES];
    static int8_t out[MODEL_OUTPUT_BYTES];
    while (fread(in, 1, sizeof in, stdin) == sizeof in) {
        if (model_invoke(in, out) != 0) return 2;
        if (fwrite(out, 1, sizeof out, stdout) != sizeof out) return 3;
    }
    return ferror(stdin) ? 4 : 0;
}
