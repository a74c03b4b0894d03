/*
 * LSTM with projections (PyTorch's proj_size, Sak et al. 2014): the row loops of fr_recur and
 * fr_recur_backward when P > 0 (fastrnn.h, "Projections"). Included by loops.h inside each dtype's
 * instance (REAL, SFX and the step macros as there). The cell's row is the table's, unchanged:
 * it writes o*tanh(c) (H) into a scratch row, and the step's new states are h = W_hr (o*tanh(c))
 * (P), one small product (nb,H) x (H,P) per step after the rows. Recurrent dropout works on the P-sized h; zoneout,
 * peepholes and layer norm are refused by the bridge.
 */

static void SFX(fr_recur_proj)(const fr_recur_args *a)
{
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, H = a->H, P = a->P, D = a->D, T = a->T, B = a->B;
    const int GH = G * H, b0 = a->b0, b1 = a->b1, nb = b1 - b0, reverse = a->reverse;
    const int ldy = a->ldy, ldh = a->ldh;
    const int *lengths = a->lengths;
    const REAL *x = (const REAL *)a->x, *w_ih = (const REAL *)a->w_ih, *w_hh = (const REAL *)a->w_hh;
    const REAL *w_hr = (const REAL *)a->w_hr;
    REAL *y = (REAL *)a->y, *act = (REAL *)a->act, *hprev = (REAL *)a->hprev, *aux = (REAL *)a->aux;
    REAL *hcell = hprev ? (REAL *)a->hcell : NULL;
    const int fused = x != NULL;
    /* fr_forward_ws_size(.., H, ..)'s layout with P <= H columns where h is meant */
    REAL *ws = (REAL *)a->ws;
    REAL *gh = ws;                              /* (nb,GH) recurrent projection of the step */
    REAL *h = ws + (ptrdiff_t)nb * GH;          /* (nb,P) running state */
    REAL *c = h + (ptrdiff_t)nb * H;            /* (nb,H) running cell state */
    REAL *aux_scratch = c + (ptrdiff_t)nb * H;  /* (A*H) inference's unkept aux */
    REAL *bias = aux_scratch + (ptrdiff_t)A * H; /* ((2G-S)*H) */
    REAL *gx = bias + (ptrdiff_t)(2 * G - k->n.shared) * H; /* fused: (nb,GH) */
    REAL *xs = gx + (fused ? (ptrdiff_t)nb * GH : 0);      /* fused: (nb,D) */
    REAL *hm = xs + (fused ? (ptrdiff_t)nb * D : 0);       /* (nb,P) h * hmask */
    REAL *packed = hm + (ptrdiff_t)nb * H + 2 * (ptrdiff_t)H; /* (fr_packed_size(GH, P)) W_hh */
    REAL *packed_ih = packed + fr_packed_size(GH, H);      /* fused: W_ih */
    REAL *hcs = (REAL *)a->pws;                 /* (nb,H) o*tanh(c) of the step's rows */
    REAL *hps = hcs + (ptrdiff_t)nb * H;        /* (nb,P) their projections */
    REAL *yc = hps + (ptrdiff_t)nb * P;         /* (H) a row's output copy (unused) */
    REAL *packed_hr = yc + H;                   /* W_hr for STEP_MM */
    const REAL *hmask = (const REAL *)a->hmask;
    REAL *hdrop = hprev ? (REAL *)a->hdrop : NULL;
    const int ldd = a->ldd;
    const REAL *hin = hmask ? hm : h;
    const int maxlen = SFX(max_length)(T, b0, b1, lengths);
    const int fast = STEP_FAST() && fr_pack_pays(maxlen, nb);

    if (lengths)
        for (int t = 0; t < T; ++t)
            for (int b = b0; b < b1; ++b)
                if (t >= lengths[b]) {
                    const ptrdiff_t row = (ptrdiff_t)t * B + b;
                    memset(y + row * ldy, 0, sizeof(REAL) * P);
                    if (hprev) memset(hprev + row * ldh, 0, sizeof(REAL) * P);
                    if (hdrop) memset(hdrop + row * ldd, 0, sizeof(REAL) * P);
                    if (hcell) memset(hcell + row * H, 0, sizeof(REAL) * H);
                }
    SFX(gate_bias)(k->n, H, 0, H, (const REAL *)a->b_ih, (const REAL *)a->b_hh, bias);
    if (fast) STEP_PACK_NT(GH, P, w_hh, packed);
    if (fast && fused) STEP_PACK_NT(GH, D, w_ih, packed_ih);
    if (fast) STEP_PACK_NT(P, H, w_hr, packed_hr);
    memset(hcs, 0, sizeof(REAL) * nb * H); /* inactive rows' (never used) products stay finite */
    memcpy(h, (const REAL *)a->h0 + (ptrdiff_t)b0 * P, sizeof(REAL) * nb * P);
    memcpy(c, (const REAL *)a->c0 + (ptrdiff_t)b0 * H, sizeof(REAL) * nb * H);

    const int direct = fused && hprev && !(reverse && lengths);
    for (int s = 0; s < maxlen; ++s) {
        REAL *gxs = direct ? act + ((ptrdiff_t)(reverse ? T - 1 - s : s) * B + b0) * GH : gx;
        if (fused) SFX(step_project)(s, T, B, b0, nb, D, GH, reverse, lengths, x, xs, fast, packed_ih, w_ih, gxs);
        if (hmask)
            for (ptrdiff_t m = 0; m < (ptrdiff_t)nb * P; ++m) hm[m] = h[m] * hmask[(ptrdiff_t)b0 * P + m];
        SFX(step_mm)(fast, 1, nb, GH, P, hin, packed, w_hh, 0, gh);
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            if (lengths && s >= lengths[b]) continue;
            const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            REAL *hb = h + (ptrdiff_t)i * P, *cb = c + (ptrdiff_t)i * H;
            REAL *gxr = fused && !direct ? gx + (ptrdiff_t)i * GH : act + row * GH;
            REAL *auxr = hprev ? aux + row * A * H : aux_scratch;
            if (hprev) memcpy(hprev + row * ldh, hb, sizeof(REAL) * P);
            if (hdrop) memcpy(hdrop + row * ldd, hm + (ptrdiff_t)i * P, sizeof(REAL) * P);
            k->fwd(H, (REAL)a->leak, gxr, H, gh + (ptrdiff_t)i * GH, bias, NULL, H, hcs + (ptrdiff_t)i * H, cb,
                   yc, auxr, H);
            if (fused && hprev && !direct) memcpy(act + row * GH, gxr, sizeof(REAL) * GH);
        }
        /* h = W_hr (o*tanh(c)) for the step's rows at once */
        SFX(step_mm)(fast, 1, nb, P, H, hcs, packed_hr, w_hr, 0, hps);
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            if (lengths && s >= lengths[b]) continue;
            const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            memcpy(h + (ptrdiff_t)i * P, hps + (ptrdiff_t)i * P, sizeof(REAL) * P);
            memcpy(y + row * ldy, hps + (ptrdiff_t)i * P, sizeof(REAL) * P);
            if (hcell) memcpy(hcell + row * H, hcs + (ptrdiff_t)i * H, sizeof(REAL) * H);
        }
    }
    memcpy((REAL *)a->h_n + (ptrdiff_t)b0 * P, h, sizeof(REAL) * nb * P);
    memcpy((REAL *)a->c_n + (ptrdiff_t)b0 * H, c, sizeof(REAL) * nb * H);
}

static void SFX(fr_recur_backward_proj)(const fr_recur_backward_args *a)
{
    const SFX(fr_cell_kind) *k = &SFX(cells)[a->cell];
    const int G = k->n.gates, A = k->n.aux, H = a->H, P = a->P, D = a->D, T = a->T;
    const int B = a->B, GH = G * H, b0 = a->b0, b1 = a->b1, nb = b1 - b0;
    const int reverse = a->reverse, ldy = a->ldy;
    const int *lengths = a->lengths;
    const REAL *w_hh = (const REAL *)a->w_hh, *w_ih = (const REAL *)a->w_ih, *w_hr = (const REAL *)a->w_hr;
    const REAL *act = (const REAL *)a->act; /* hprev: only fr_backward_params reads it */
    const REAL *aux = (const REAL *)a->aux, *dy = (const REAL *)a->dy;
    REAL *dgx = (REAL *)a->dgx, *dhs = (REAL *)a->dhs;
    REAL *dbias = (REAL *)a->dbias, *dx = (REAL *)a->dx;
    if (dbias) memset(dbias, 0, sizeof(REAL) * (size_t)GH);
    /* fr_backward_ws_size(.., H)'s layout with P <= H columns where h is meant */
    REAL *ws = (REAL *)a->ws;
    REAL *dh = ws;                             /* (nb,P) gradient w.r.t. the state leaving s */
    REAL *dhp = ws + (ptrdiff_t)nb * H;        /* (nb,P) same for the state entering s */
    REAL *dc = ws + (ptrdiff_t)2 * nb * H;     /* (nb,H) cell-state gradient */
    REAL *step = ws + (ptrdiff_t)3 * nb * H;   /* (nb,GH) gathered gate gradients */
    REAL *prod = step + (ptrdiff_t)nb * GH;    /* (nb,P) the product with W_hh before hmask */
    REAL *packed = prod + (ptrdiff_t)nb * H + 4 * (ptrdiff_t)H; /* (fr_packed_size(P, GH)) W_hh */
    REAL *packed_ih = packed + fr_packed_size(H, GH); /* with dx: W_ih */
    REAL *dhcs = (REAL *)a->pws;               /* (nb,H) W_hr^T dh of the step's rows */
    REAL *dz = dhcs + (ptrdiff_t)nb * H + (ptrdiff_t)nb * P; /* (H) a row's direct dh_prev part (0) */
    REAL *packed_hr = dz + H;                  /* W_hr for STEP_MM */
    const REAL *hmask = (const REAL *)a->hmask;
    const int gathered = reverse && lengths != NULL;
    const int maxlen = SFX(max_length)(T, b0, b1, lengths);
    const int fast = STEP_FAST() && fr_pack_pays(maxlen, nb);

    if (lengths)
        for (int t = 0; t < T; ++t) {
            memset(dgx + ((ptrdiff_t)t * B + b0) * GH, 0, sizeof(REAL) * nb * GH);
            memset(dhs + ((ptrdiff_t)t * B + b0) * P, 0, sizeof(REAL) * nb * P);
        }
    if (fast) STEP_PACK_NN(P, GH, w_hh, packed);
    if (fast) STEP_PACK_NN(H, P, w_hr, packed_hr);
    const int dx_rows = dx && !(reverse && lengths);
    if (dx && fast) STEP_PACK_NN(D, GH, w_ih, packed_ih);
    if (dx && lengths)
        for (int t = 0; t < T; ++t)
            for (int b = b0; b < b1; ++b)
                if (t >= lengths[b]) memset(dx + ((ptrdiff_t)t * B + b) * D, 0, sizeof(REAL) * D);
    if (a->dh_n) memcpy(dh, (const REAL *)a->dh_n + (ptrdiff_t)b0 * P, sizeof(REAL) * nb * P);
    else memset(dh, 0, sizeof(REAL) * nb * P);
    if (a->dc_n) memcpy(dc, (const REAL *)a->dc_n + (ptrdiff_t)b0 * H, sizeof(REAL) * nb * H);
    else memset(dc, 0, sizeof(REAL) * nb * H);

    for (int s = maxlen - 1; s >= 0; --s) {
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            if (lengths && s >= lengths[b]) continue;
            const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            REAL *dhb = dh + (ptrdiff_t)i * P;
            if (dy) SFX(add_to)(P, dhb, dy + row * ldy);
            memcpy(dhs + row * P, dhb, sizeof(REAL) * P);
        }
        /* h = W_hr (o*tanh(c)): the rows see W_hr^T dh, for the step's rows at once (an inactive
         * row's product is never read) */
        SFX(step_mm)(fast, 0, nb, H, P, dh, packed_hr, w_hr, 0, dhcs);
        for (int i = 0; i < nb; ++i) {
            const int b = b0 + i;
            REAL *dhb = dh + (ptrdiff_t)i * P, *dhpb = dhp + (ptrdiff_t)i * P;
            if (lengths && s >= lengths[b]) {
                memcpy(dhpb, dhb, sizeof(REAL) * P);
                if (gathered) memset(step + (ptrdiff_t)i * GH, 0, sizeof(REAL) * GH);
                continue;
            }
            const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
            REAL *d = dgx + row * GH;
            k->bwd(H, (REAL)a->leak, act + row * GH, H, A ? aux + row * A * H : NULL, H, NULL, NULL, H,
                   NULL, dhcs + (ptrdiff_t)i * H, dc + (ptrdiff_t)i * H, d, NULL, H, dz);
            memset(dhpb, 0, sizeof(REAL) * P); /* an LSTM's state reaches the step only via W_hh */
            if (gathered) memcpy(step + (ptrdiff_t)i * GH, d, sizeof(REAL) * GH);
            if (dbias) SFX(add_to)(GH, dbias, d);
        }
        const REAL *dstep = gathered
            ? step : dgx + ((ptrdiff_t)SFX(pos)(s, 0, T, reverse, NULL) * B + b0) * GH;
        if (hmask) {
            SFX(step_mm)(fast, 0, nb, P, GH, dstep, packed, w_hh, 0, prod);
            for (ptrdiff_t m = 0; m < (ptrdiff_t)nb * P; ++m) dhp[m] += prod[m] * hmask[(ptrdiff_t)b0 * P + m];
        } else SFX(step_mm)(fast, 0, nb, P, GH, dstep, packed, w_hh, 1, dhp);
        if (lengths)
            for (int i = 0; i < nb; ++i)
                if (s >= lengths[b0 + i])
                    memcpy(dhp + (ptrdiff_t)i * P, dh + (ptrdiff_t)i * P, sizeof(REAL) * P);
        if (dx_rows) {
            const ptrdiff_t r = (ptrdiff_t)SFX(pos)(s, 0, T, reverse, NULL) * B + b0;
            SFX(step_mm)(fast, 0, nb, D, GH, dgx + r * GH, packed_ih, w_ih, 0, dx + r * D);
            if (lengths)
                for (int i = 0; i < nb; ++i)
                    if (s >= lengths[b0 + i]) memset(dx + (r + i) * D, 0, sizeof(REAL) * D);
        } else if (dx)
            for (int i = 0; i < nb; ++i) {
                const int b = b0 + i;
                if (s >= lengths[b]) continue;
                const ptrdiff_t row = (ptrdiff_t)SFX(pos)(s, b, T, reverse, lengths) * B + b;
                SFX(gemm)(0, 0, 1, D, GH, dgx + row * GH, GH, w_ih, D, (REAL)0, dx + row * D, D);
            }
        REAL *tmp = dh; dh = dhp; dhp = tmp;
    }
    memcpy((REAL *)a->dh0 + (ptrdiff_t)b0 * P, dh, sizeof(REAL) * nb * P);
    memcpy((REAL *)a->dc0 + (ptrdiff_t)b0 * H, dc, sizeof(REAL) * nb * H);
}
