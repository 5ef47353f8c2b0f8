

df_copy((a + 32), (a + 0), 18); /* no-op when planned in place */
