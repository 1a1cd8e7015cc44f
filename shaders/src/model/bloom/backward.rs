//! The model's backward pass: every layer's gradients from the loss, in reverse, through the
//! backend's kernels.

use super::*;

impl<B: Backend> Model<B> {
    /// Runs the backward pass of the last [`Model::forward`] on `ws`, overwriting every
    /// gradient buffer (the tied embedding gets the LM head's and the lookup's
    /// contributions).
    pub fn backward(&mut self, backend: &B, ws: &mut Workspace<B>) -> Result<()> {
        ws.check(&self.config)?;
        if !ws.forward_done {
            return Err(ShaderError::Parameter {
                name: "workspace",
                value: "no forward pass".into(),
                reason: "backward needs a completed forward pass on this workspace",
            });
        }
        let c = self.config;
        let t = ws.tokens();
        let (h, f, v) = (c.hidden, c.ffn(), c.vocab);
        let (w, g) = (&self.weights, &mut self.grads);
        let scale = 1.0 / ws.valid.max(1) as f32;
        backend.cross_entropy_backward(&ws.logits, &ws.targets, &ws.lse, &mut ws.dlogits, scale)?;
        // The tied LM head: logits = lnf · wteᵀ.
        backend.matmul(
            &ws.dlogits,
            &ws.lnf,
            &mut g[WTE],
            shape(v, t, h, Transpose::A),
        )?;
        backend.matmul(
            &ws.dlogits,
            &w[WTE],
            &mut ws.dln,
            shape(t, v, h, Transpose::None),
        )?;
        let fl = final_ln(&c);
        let (dgamma, dbeta) = pair(g, fl);
        backend.layernorm_backward(
            &ws.xs[c.layers],
            &w[fl],
            &ws.lnf_mean,
            &ws.lnf_rstd,
            &ws.dln,
            &mut ws.dres,
            dgamma,
            dbeta,
        )?;
        for l in (0..c.layers).rev() {
            let i = |s: usize| layer_tensor(l, s);
            let a = &ws.layers[l];
            // MLP: x_next = mid + act · W2ᵀ + b2.
            linear_backward(
                backend,
                &ws.dres,
                &a.act,
                &w[i(slot::FC2_W)],
                pair(g, i(slot::FC2_W)),
                &mut ws.dact,
                (t, f, h),
            )?;
            backend.gelu_backward(&a.h4, &ws.dact, &mut ws.dh4)?;
            linear_backward(
                backend,
                &ws.dh4,
                &a.ln2,
                &w[i(slot::FC1_W)],
                pair(g, i(slot::FC1_W)),
                &mut ws.dln,
                (t, h, f),
            )?;
            let (dgamma, dbeta) = pair(g, i(slot::POST_LN_W));
            backend.layernorm_backward(
                &a.mid,
                &w[i(slot::POST_LN_W)],
                &a.mean2,
                &a.rstd2,
                &ws.dln,
                &mut ws.dtmp,
                dgamma,
                dbeta,
            )?;
            ws.ones.apply(backend, &ws.dtmp, &mut ws.dres, true)?;
            // Attention: mid = x + attn · Wdᵀ + bd.
            linear_backward(
                backend,
                &ws.dres,
                &a.attn,
                &w[i(slot::DENSE_W)],
                pair(g, i(slot::DENSE_W)),
                &mut ws.dattn,
                (t, h, h),
            )?;
            backend.attention_backward(
                &a.qkv,
                &self.slopes,
                &a.attn,
                &a.lse,
                &ws.dattn,
                &mut ws.dqkv,
                ws.attention,
            )?;
            linear_backward(
                backend,
                &ws.dqkv,
                &a.ln1,
                &w[i(slot::QKV_W)],
                pair(g, i(slot::QKV_W)),
                &mut ws.dln,
                (t, h, 3 * h),
            )?;
            let (dgamma, dbeta) = pair(g, i(slot::INPUT_LN_W));
            backend.layernorm_backward(
                &ws.xs[l],
                &w[i(slot::INPUT_LN_W)],
                &a.mean1,
                &a.rstd1,
                &ws.dln,
                &mut ws.dtmp,
                dgamma,
                dbeta,
            )?;
            ws.ones.apply(backend, &ws.dtmp, &mut ws.dres, true)?;
        }
        let (dgamma, dbeta) = pair(g, EMB_LN);
        backend.layernorm_backward(
            &ws.emb,
            &w[EMB_LN],
            &ws.emb_mean,
            &ws.emb_rstd,
            &ws.dres,
            &mut ws.dtmp,
            dgamma,
            dbeta,
        )?;
        backend.embedding_backward(&ws.ids, &ws.dtmp, &mut g[WTE], h)
    }
}

/// Backward of a [`linear`] layer `y = x · Wᵀ + b` (`x` is `[rows, inp]`, `W` is `[out, inp]`):
/// the bias gradient and the weight gradient into `(dw, db)` (adjacent slots, see [`pair`]),
/// then `dx = dy · W`. `(rows, inp, out)` are the layer's sizes.
fn linear_backward<B: Backend>(
    backend: &B,
    dy: &B::Buffer<f32>,
    x: &B::Buffer<f32>,
    w: &B::Buffer<f32>,
    (dw, db): (&mut B::Buffer<f32>, &mut B::Buffer<f32>),
    dx: &mut B::Buffer<f32>,
    (rows, inp, out): (usize, usize, usize),
) -> Result<()> {
    backend.bias_grad(dy, db, rows, out)?;
    backend.matmul(dy, x, dw, shape(out, rows, inp, Transpose::A))?;
    backend.matmul(dy, w, dx, shape(rows, out, inp, Transpose::None))
}
