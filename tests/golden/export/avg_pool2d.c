static void df_avg_pool2d(const df_window *p, const int8_t *in, int8_t *out)
{ /* TFLite int8 average pool: mean of the valid taps, rounded half away from zero, same scale */
    int32_t y, x, c, ky, kx;
    for (y = 0; y < p->oh; ++y) for (x = 0; x < p->ow; ++x) {
        const int32_t y0 = y * p->sh - p->pt, x0 = x * p->sw - p->pl;
        for (c = 0; c < p->oc; ++c) {
            int32_t acc = 0, n = 0;
            for (ky = 0; ky < p->kh; ++ky) {
                const int32_t iy = y0 + ky;
                if (iy < 0 || iy >= p->ih) continue;
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = x0 + kx;
                    if (ix < 0 || ix >= p->iw) continue;
                    acc += in[(iy * p->iw + ix) * p->ic + c];
                    ++n;
                }
            }
            acc = acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n;
            out[(y * p->ow + x) * p->oc + c] = df_clamp(acc, p->act_min, p->act_max);
        }
    }
}

static const df_window p0 = {3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, -3, 4, -128, 127, 0, 0, 0, 0};
df_avg_pool2d(&p0, (a + 0), (a + 32));
