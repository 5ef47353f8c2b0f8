static void df_add(const df_add_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{ /* TFLite int8 ADD; elementwise, so `out` may be `a` or `b` */
    int32_t i;
    for (i = 0; i < p->n; ++i) out[i] = df_add_one(p, a[i], b[i]);
}

static const df_add_params p0 = {18, -3, -3, 2, 20, 1073741824, 0, 1073741824, 0, 1533916891, -19, 2, 127};
df_add(&p0, (a + 0), (a + 0), (a + 32));
