typedef struct {
    int32_t n, zp1, zp2, out_zp, left_shift, m1, s1, m2, s2, mo, so, act_min, act_max;
} df_add_params;

static void df_add(const df_add_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{ /* TFLite int8 ADD; elementwise, so `out` may be `a` or `b` */
    int32_t i;
    for (i = 0; i < p->n; ++i) {
        const int32_t x = df_requant(((int32_t)a[i] - p->zp1) * (1 << p->left_shift), p->m1, p->s1);
        const int32_t y = df_requant(((int32_t)b[i] - p->zp2) * (1 << p->left_shift), p->m2, p->s2);
        out[i] = df_clamp(df_requant(x + y, p->mo, p->so) + p->out_zp, p->act_min, p->act_max);
    }
}

static const df_add_params p0 = {18, -3, -3, 2, 20, 1073741824, 0, 1073741824, 0, 1533916891, -19, 2, 127};
df_add(&p0, (a + 0), (a + 0), (a + 32));
