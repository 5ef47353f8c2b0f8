typedef struct {
    int32_t n_in, n_out, in_zp, out_zp, act_min, act_max;
    const int8_t *w; const int32_t *bias, *mult, *shift;
} df_fc;

static void df_fully_connected(const df_fc *p, const int8_t *in, int8_t *out)
{ /* in (n_in), w (n_out, n_in), out (n_out) */
    int32_t o, i;
    for (o = 0; o < p->n_out; ++o) {
        const int8_t *w = p->w + o * p->n_in;
        int32_t acc = p->bias[o];
        for (i = 0; i < p->n_in; ++i) acc += ((int32_t)in[i] - p->in_zp) * (int32_t)w[i];
        out[o] = df_clamp(df_requant(acc, p->mult[o], p->shift[o]) + p->out_zp, p->act_min, p->act_max);
    }
}

static const int8_t w0[8] = {
    1, -2, 3, -4, 5, 6, -7, 8
};
static const int32_t b0[2] = {
    100, -7
};
static const int32_t m0[2] = {
    1073741824, 1518500250
};
static const int32_t s0[2] = {
    -1, -3
};
static const df_fc p0 = {4, 2, -3, 1, -128, 127, w0, b0, m0, s0};
df_fully_connected(&p0, (a + 0), (a + 32));
