//! conv2d (interim naive version; replaced by im2col on the fast GEMM).
use super::gemm::GemmScalar;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
}
impl Conv2dGeometry {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.kh) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.kw) / self.stride + 1
    }
}
fn each<T: GemmScalar>(g: &Conv2dGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (g.out_h(), g.out_w());
    for n in 0..g.n {
        for k in 0..g.k {
            for oy in 0..oh {
                for ox in 0..ow {
                    for c in 0..g.c {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let y = (oy * g.stride + ky) as isize - g.padding as isize;
                                let x = (ox * g.stride + kx) as isize - g.padding as isize;
                                if y < 0 || x < 0 || y >= g.h as isize || x >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.c + c) * g.h + y as usize) * g.w + x as usize;
                                let wi = ((k * g.c + c) * g.kh + ky) * g.kw + kx;
                                let oi = ((n * g.k + k) * oh + oy) * ow + ox;
                                f(xi, wi, oi);
                            }
                        }
                    }
                }
            }
        }
    }
}
pub fn conv2d_forward<T: GemmScalar>(g: &Conv2dGeometry, x: &[T], weight: &[T], bias: Option<&[T]>, out: &mut [T]) {
    let hw = g.out_h() * g.out_w();
    for (i, o) in out.iter_mut().enumerate() {
        *o = bias.map_or(T::ZERO, |b| b[(i / hw) % g.k]);
    }
    each::<T>(g, |xi, wi, oi| out[oi] = out[oi] + x[xi] * weight[wi]);
}
pub fn conv2d_backward_input<T: GemmScalar>(g: &Conv2dGeometry, grad_out: &[T], weight: &[T], grad_x: &mut [T]) {
    grad_x.iter_mut().for_each(|v| *v = T::ZERO);
    each::<T>(g, |xi, wi, oi| grad_x[xi] = grad_x[xi] + grad_out[oi] * weight[wi]);
}
pub fn conv2d_backward_weight<T: GemmScalar>(
    g: &Conv2dGeometry,
    x: &[T],
    grad_out: &[T],
    grad_w: &mut [T],
    grad_b: Option<&mut [T]>,
) {
    grad_w.iter_mut().for_each(|v| *v = T::ZERO);
    each::<T>(g, |xi, wi, oi| grad_w[wi] = grad_w[wi] + grad_out[oi] * x[xi]);
    if let Some(gb) = grad_b {
        let hw = g.out_h() * g.out_w();
        gb.iter_mut().for_each(|v| *v = T::ZERO);
        for (i, &go) in grad_out.iter().enumerate() {
            let k = (i / hw) % g.k;
            gb[k] = gb[k] + go;
        }
    }
}
