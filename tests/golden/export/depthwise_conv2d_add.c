static void df_depthwise_conv2d_add(const df_window *p, const df_add_params *pa, const int8_t *in, const int8_t *skip, int8_t *out, int32_t *acc)
{ /* in (ih, iw, c), w (kh, kw, c), out (oh, ow, c); depth multiplier 1. Per output pixel the int32
     accumulators of all channels live in scratch, so the channel loop is innermost (contiguous in NHWC). */
    const int32_t nc = p->oc, in_zp = p->in_zp;
    int32_t y, x, c, ky, kx;
    for (y = 0; y < p->oh; ++y) for (x = 0; x < p->ow; ++x) {
        const int32_t y0 = y * p->sh - p->pt, x0 = x * p->sw - p->pl;
        int8_t *po = out + (y * p->ow + x) * nc;
        for (c = 0; c < nc; ++c) acc[c] = p->bias[c];
        for (ky = 0; ky < p->kh; ++ky) {
            const int32_t iy = y0 + ky;
            if (iy < 0 || iy >= p->ih) continue;
            for (kx = 0; kx < p->kw; ++kx) {
                const int32_t ix = x0 + kx;
                const int8_t *px, *pw;
                if (ix < 0 || ix >= p->iw) continue;
                px = in + (iy * p->iw + ix) * nc;
                pw = p->w + (ky * p->kw + kx) * nc;
                for (c = 0; c < nc; ++c) acc[c] += ((int32_t)px[c] - in_zp) * (int32_t)pw[c];
            }
        }
        for (c = 0; c < nc; ++c)
            po[c] = df_add_one(pa, df_clamp(df_requant(acc[c], p->mult[c], p->shift[c]) + p->out_zp, p->act_min, p->act_max), skip[(y * p->ow + x) * nc + c]);
    }
}

static const int8_t w0[8] = {
    -4, -3, -2, -1, 0, 1, 2, 3
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
static const df_window p0 = {3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, -3, 4, -128, 127, w0, b0, m0, s0};
static const df_add_params pa0 = {8, 4, -5, 3, 20, 1073741824, 0, 1518500250, -1, 1533916891, -19, -128, 127};
df_depthwise_conv2d_add(&p0, &pa0, (a + 0), (a + 0), (a + 32), (int32_t *)(void *)(a + 64));
