// Fused CPU rasterizer for relight/: projection, binning and compositing of 3D Gaussians, forward and
// backward, with OpenMP. It computes exactly what relight/projection.py `project` and relight/rasterize.py
// `rasterize_projected` compute (same culling, radii, alpha cut-offs, 8x8 tiles, depth order), plus the
// early termination of 3D Gaussian splatting: a pixel stops compositing at the first Gaussian that would
// bring its transmittance below T_MIN (that Gaussian and all behind it are left out). The backward pass
// differentiates that same terminated sum.
//
// Four entry points (see relight/kernel.py for the autograd Function that chains them):
//   project_forward    means, quats, scales, opacities, camera -> means2d, conics, depths, radii
//   composite_forward  screen-space Gaussians -> image, alpha, and what the backward needs
//   composite_backward d loss / d image, alpha -> d loss / d means2d, conics, opacities, colours
//   project_backward   d loss / d means2d, conics -> d loss / d means, quats, scales
//
// float32 and float64 are both supported (float64 lets the tests check the gradients to 1e-10).

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

namespace {

// The constants of relight/projection.py and relight/rasterize.py (checked from Python at load time).
constexpr int TILE = 8;
constexpr int PIX = TILE * TILE;  // pixels per tile
constexpr double NEAR = 0.01;
constexpr double BLUR = 0.3;
constexpr double ALPHA_MIN = 1.0 / 255.0;
constexpr double ALPHA_MAX = 0.99;
constexpr double T_MIN = 1e-4;  // early termination: transmittance below which a pixel stops

// ---------------------------------------------------------------------------------------------------
// exp that the compiler can vectorise. For float: range reduction x = n ln2 + r (|r| <= ln2 / 2, ln2 split
// in a high part with few bits and a low part so that n * ln2_hi is exact), then e^r by its Taylor
// polynomial of degree 7 (truncation error < 5e-9, below float's 6e-8 rounding), times 2^n built from the
// exponent bits. About 1 ulp from the correctly rounded value. For double: std::exp.
// min and max by value: std::min returns a reference, which in a vector loop becomes a masked gather.
template <typename T>
inline T min_v(T a, T b) { return b < a ? b : a; }
template <typename T>
inline T max_v(T a, T b) { return a < b ? b : a; }

inline float exp_approx(float x) {
    x = min_v(max_v(x, -87.0f), 88.0f);
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
    const float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

int num_threads() { return std::max(1, at::get_num_threads()); }

// Calls f(float{}) or f(double{}) after the dtype (a generic lambda then names it scalar_t).
// Not AT_DISPATCH_FLOATING_TYPES: OpenMP pragmas cannot stand inside a macro's arguments.
template <typename F>
void dispatch(torch::ScalarType type, F&& f) {
    if (type == torch::kFloat32) {
        f(float{});
    } else {
        TORCH_CHECK(type == torch::kFloat64, "relight_fused takes float32 or float64 tensors");
        f(double{});
    }
}

// ---------------------------------------------------------------------------------------------------
// Projection of one Gaussian (EWA splatting), keeping the intermediates its backward needs.

struct CameraParams {
    double view[12];  // rows of the world-to-camera [R | t] (OpenCV axes), 3 x 4
    double fx, fy, cx, cy;
};

template <typename T>
struct Projection {
    T q[4];        // normalised quaternion (w, x, y, z)
    T qnorm;       // norm of the input quaternion (clamped at 1e-12)
    T rq[9];       // its rotation matrix, row-major
    T m[9];        // M = rq diag(s); the world covariance is M M^T
    T sigma[9];    // world covariance
    T p[3];        // camera-space position
    T z;           // depth clamped at NEAR
    T t[6];        // T = J R, 2 x 3 (J: the projection's Jacobian at p)
    T cov2d[3];    // a, b, c of the 2D covariance (blur included)
    T det;         // a c - b^2 clamped at 1e-12
    T conic[3];    // inverse 2D covariance (c, -b, a) / det
    T mean2d[2];   // pixel position
    T radius;      // cut-off radius in pixels (0: culled)
};

// The same arithmetic as projection.py, in the tensors' precision.
template <typename T>
void project_one(const T* mean, const T* quat, const T* scale, T opacity, const CameraParams& cam,
                 Projection<T>& o) {
    // rotation of the normalised quaternion (gaussians.py quat_to_rotmat)
    T n2 = quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3];
    o.qnorm = std::max(std::sqrt(n2), T(1e-12));
    for (int i = 0; i < 4; ++i) o.q[i] = quat[i] / o.qnorm;
    const T w = o.q[0], x = o.q[1], y = o.q[2], z = o.q[3];
    T* r = o.rq;
    r[0] = 1 - 2 * (y * y + z * z); r[1] = 2 * (x * y - w * z);     r[2] = 2 * (x * z + w * y);
    r[3] = 2 * (x * y + w * z);     r[4] = 1 - 2 * (x * x + z * z); r[5] = 2 * (y * z - w * x);
    r[6] = 2 * (x * z - w * y);     r[7] = 2 * (y * z + w * x);     r[8] = 1 - 2 * (x * x + y * y);
    // world covariance M M^T with M = R diag(s)
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k) o.m[3 * i + k] = r[3 * i + k] * scale[k];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            o.sigma[3 * i + j] = o.m[3 * i] * o.m[3 * j] + o.m[3 * i + 1] * o.m[3 * j + 1] + o.m[3 * i + 2] * o.m[3 * j + 2];
    // camera space
    T v[12];
    for (int i = 0; i < 12; ++i) v[i] = T(cam.view[i]);
    for (int i = 0; i < 3; ++i) o.p[i] = v[4 * i] * mean[0] + v[4 * i + 1] * mean[1] + v[4 * i + 2] * mean[2] + v[4 * i + 3];
    o.z = std::max(o.p[2], T(NEAR));
    const T fx = T(cam.fx), fy = T(cam.fy);
    const T j00 = fx / o.z, j02 = -fx * o.p[0] / (o.z * o.z);
    const T j11 = fy / o.z, j12 = -fy * o.p[1] / (o.z * o.z);
    // T = J R (rows of R are v[0..2], v[4..6], v[8..10])
    for (int k = 0; k < 3; ++k) {
        o.t[k] = j00 * v[k] + j02 * v[8 + k];
        o.t[3 + k] = j11 * v[4 + k] + j12 * v[8 + k];
    }
    // cov2d = T sigma T^T + BLUR I
    T ts[6];  // T sigma
    for (int i = 0; i < 2; ++i)
        for (int k = 0; k < 3; ++k)
            ts[3 * i + k] = o.t[3 * i] * o.sigma[k] + o.t[3 * i + 1] * o.sigma[3 + k] + o.t[3 * i + 2] * o.sigma[6 + k];
    const T a = ts[0] * o.t[0] + ts[1] * o.t[1] + ts[2] * o.t[2] + T(BLUR);
    const T b = ts[0] * o.t[3] + ts[1] * o.t[4] + ts[2] * o.t[5];
    const T c = ts[3] * o.t[3] + ts[4] * o.t[4] + ts[5] * o.t[5] + T(BLUR);
    o.cov2d[0] = a; o.cov2d[1] = b; o.cov2d[2] = c;
    o.det = std::max(a * c - b * b, T(1e-12));
    o.conic[0] = c / o.det; o.conic[1] = -b / o.det; o.conic[2] = a / o.det;
    o.mean2d[0] = fx * o.p[0] / o.z + T(cam.cx);
    o.mean2d[1] = fy * o.p[1] / o.z + T(cam.cy);
    // radius at which alpha = opacity exp(-d^2 / 2) falls below ALPHA_MIN, along the major axis
    const T lam_max = T(0.5) * (a + c) + std::sqrt(std::max(T(0.25) * (a - c) * (a - c) + b * b, T(0)));
    const T reach = std::sqrt(2 * std::log(std::max(opacity / T(ALPHA_MIN), T(1))));
    o.radius = o.p[2] > T(NEAR) ? std::ceil(reach * std::sqrt(lam_max)) : T(0);
}

CameraParams camera_params(const torch::Tensor& viewmat, double fx, double fy, double cx, double cy) {
    TORCH_CHECK(viewmat.dim() == 2 && viewmat.size(0) == 4 && viewmat.size(1) == 4, "viewmat must be 4 x 4");
    auto v = viewmat.to(torch::kFloat64).contiguous();
    const double* d = v.data_ptr<double>();
    CameraParams cam;
    for (int i = 0; i < 12; ++i) cam.view[i] = d[i];  // first three rows
    cam.fx = fx; cam.fy = fy; cam.cx = cx; cam.cy = cy;
    return cam;
}

// ---------------------------------------------------------------------------------------------------
// project_forward: [N,3], [N,4], [N,3], [N] -> means2d [N,2], conics [N,3], depths [N], radii [N]

std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                           torch::Tensor opacities, torch::Tensor viewmat,
                                           double fx, double fy, double cx, double cy) {
    const int64_t n = means.size(0);
    const CameraParams cam = camera_params(viewmat, fx, fy, cx, cy);
    auto opts = means.options();
    auto means2d = torch::empty({n, 2}, opts), conics = torch::empty({n, 3}, opts);
    auto depths = torch::empty({n}, opts), radii = torch::empty({n}, opts);
    dispatch(means.scalar_type(), [&](auto tag) {
        using scalar_t = decltype(tag);
        const scalar_t *mp = means.data_ptr<scalar_t>(), *qp = quats.data_ptr<scalar_t>();
        const scalar_t *sp = scales.data_ptr<scalar_t>(), *op = opacities.data_ptr<scalar_t>();
        scalar_t *m2 = means2d.data_ptr<scalar_t>(), *co = conics.data_ptr<scalar_t>();
        scalar_t *de = depths.data_ptr<scalar_t>(), *ra = radii.data_ptr<scalar_t>();
#pragma omp parallel for num_threads(num_threads()) schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            Projection<scalar_t> pr;
            project_one(mp + 3 * i, qp + 4 * i, sp + 3 * i, op[i], cam, pr);
            m2[2 * i] = pr.mean2d[0]; m2[2 * i + 1] = pr.mean2d[1];
            co[3 * i] = pr.conic[0]; co[3 * i + 1] = pr.conic[1]; co[3 * i + 2] = pr.conic[2];
            de[i] = pr.p[2];
            ra[i] = pr.radius;
        }
    });
    return {means2d, conics, depths, radii};
}

// ---------------------------------------------------------------------------------------------------
// project_backward: d loss / d means2d [N,2], conics [N,3] -> d loss / d means [N,3], quats [N,4], scales [N,3].
// Only Gaussians with radius > 0 receive gradients (the others are culled, as in the PyTorch path).

std::vector<torch::Tensor> project_backward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                            torch::Tensor opacities, torch::Tensor radii, torch::Tensor viewmat,
                                            double fx, double fy, double cx, double cy,
                                            torch::Tensor grad_means2d, torch::Tensor grad_conics) {
    const int64_t n = means.size(0);
    const CameraParams cam = camera_params(viewmat, fx, fy, cx, cy);
    auto g_means = torch::zeros_like(means), g_quats = torch::zeros_like(quats), g_scales = torch::zeros_like(scales);
    dispatch(means.scalar_type(), [&](auto tag) {
        using scalar_t = decltype(tag);
        using T = scalar_t;
        const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>();
        const T *op = opacities.data_ptr<T>(), *ra = radii.data_ptr<T>();
        const T *gm2 = grad_means2d.data_ptr<T>(), *gco = grad_conics.data_ptr<T>();
        T *gm = g_means.data_ptr<T>(), *gq = g_quats.data_ptr<T>(), *gs = g_scales.data_ptr<T>();
        T v[12];
        for (int i = 0; i < 12; ++i) v[i] = T(cam.view[i]);
        const T fx_ = T(fx), fy_ = T(fy);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            if (!(ra[i] > 0)) continue;
            Projection<T> pr;
            project_one(mp + 3 * i, qp + 4 * i, sp + 3 * i, op[i], cam, pr);
            const T x = pr.p[0], y = pr.p[1], z = pr.z;  // z > NEAR here, so the clamp passes gradients
            // conic = (c, -b, a) / det, det = a c - b^2
            const T gA = gco[3 * i], gB = gco[3 * i + 1], gC = gco[3 * i + 2];
            const T a = pr.cov2d[0], b = pr.cov2d[1], c = pr.cov2d[2], det = pr.det;
            const bool det_free = a * c - b * b >= T(1e-12);  // clamp_min passes the gradient
            const T g_det = det_free ? -(gA * c - gB * b + gC * a) / (det * det) : T(0);
            const T ga = gC / det + g_det * c;
            const T gb = -gB / det - 2 * g_det * b;
            const T gc = gA / det + g_det * a;
            // cov2d = T sigma T^T: with E = [[ga, gb], [0, gc]] (only cov2d[0, 1] is read as b),
            // d/dT = (E + E^T) T sigma and d/dsigma = T^T E T (symmetrised through sigma = M M^T below).
            const T s00 = 2 * ga, s01 = gb, s11 = 2 * gc;  // E + E^T
            T ts[6];  // T sigma
            for (int r = 0; r < 2; ++r)
                for (int k = 0; k < 3; ++k)
                    ts[3 * r + k] = pr.t[3 * r] * pr.sigma[k] + pr.t[3 * r + 1] * pr.sigma[3 + k] + pr.t[3 * r + 2] * pr.sigma[6 + k];
            T g_t[6];
            for (int k = 0; k < 3; ++k) {
                g_t[k] = s00 * ts[k] + s01 * ts[3 + k];
                g_t[3 + k] = s01 * ts[k] + s11 * ts[3 + k];
            }
            // d/dsigma symmetrised: T^T (E + E^T) T, then d/dM = that times M
            T et[6];  // (E + E^T) T
            for (int k = 0; k < 3; ++k) {
                et[k] = s00 * pr.t[k] + s01 * pr.t[3 + k];
                et[3 + k] = s01 * pr.t[k] + s11 * pr.t[3 + k];
            }
            T g_sig[9];  // T^T (E + E^T) T
            for (int r = 0; r < 3; ++r)
                for (int k = 0; k < 3; ++k) g_sig[3 * r + k] = pr.t[r] * et[k] + pr.t[3 + r] * et[3 + k];
            T g_m[9];
            for (int r = 0; r < 3; ++r)
                for (int k = 0; k < 3; ++k)
                    g_m[3 * r + k] = g_sig[3 * r] * pr.m[k] + g_sig[3 * r + 1] * pr.m[3 + k] + g_sig[3 * r + 2] * pr.m[6 + k];
            // M = R diag(s)
            T g_r[9];
            for (int r = 0; r < 3; ++r)
                for (int k = 0; k < 3; ++k) {
                    g_r[3 * r + k] = g_m[3 * r + k] * sp[3 * i + k];
                    gs[3 * i + k] += g_m[3 * r + k] * pr.rq[3 * r + k];
                }
            // rotation matrix -> normalised quaternion
            const T qw = pr.q[0], qx = pr.q[1], qy = pr.q[2], qz = pr.q[3];
            const T* G = g_r;
            T gqn[4];
            gqn[0] = 2 * (-qz * G[1] + qy * G[2] + qz * G[3] - qx * G[5] - qy * G[6] + qx * G[7]);
            gqn[1] = 2 * (qy * G[1] + qz * G[2] + qy * G[3] - 2 * qx * G[4] - qw * G[5] + qz * G[6] + qw * G[7] - 2 * qx * G[8]);
            gqn[2] = 2 * (-2 * qy * G[0] + qx * G[1] + qw * G[2] + qx * G[3] + qz * G[5] - qw * G[6] + qz * G[7] - 2 * qy * G[8]);
            gqn[3] = 2 * (-2 * qz * G[0] - qw * G[1] + qx * G[2] + qw * G[3] - 2 * qz * G[4] + qy * G[5] + qx * G[6] + qy * G[7]);
            // normalisation q = quat / |quat|: d/dquat = (g - q (q . g)) / |quat|
            const T dot = qw * gqn[0] + qx * gqn[1] + qy * gqn[2] + qz * gqn[3];
            const bool norm_free = pr.qnorm > T(1e-12);
            for (int k = 0; k < 4; ++k)
                gq[4 * i + k] = norm_free ? (gqn[k] - pr.q[k] * dot) / pr.qnorm : gqn[k] / pr.qnorm;
            // T = J R: d/dJ = d/dT R^T, for the four entries of J that are not zero
            const T gj00 = g_t[0] * v[0] + g_t[1] * v[1] + g_t[2] * v[2];
            const T gj02 = g_t[0] * v[8] + g_t[1] * v[9] + g_t[2] * v[10];
            const T gj11 = g_t[3] * v[4] + g_t[4] * v[5] + g_t[5] * v[6];
            const T gj12 = g_t[3] * v[8] + g_t[4] * v[9] + g_t[5] * v[10];
            const T gu = gm2[2 * i], gv = gm2[2 * i + 1];
            const T z2 = z * z, z3 = z2 * z;
            // J00 = fx/z, J02 = -fx x/z^2, J11 = fy/z, J12 = -fy y/z^2; u = fx x/z + cx, v = fy y/z + cy
            const T gx = gj02 * (-fx_ / z2) + gu * fx_ / z;
            const T gy = gj12 * (-fy_ / z2) + gv * fy_ / z;
            const T gz = gj00 * (-fx_ / z2) + gj02 * (2 * fx_ * x / z3) + gj11 * (-fy_ / z2) + gj12 * (2 * fy_ * y / z3)
                         - gu * fx_ * x / z2 - gv * fy_ * y / z2;
            // p = R mean + t
            for (int k = 0; k < 3; ++k) gm[3 * i + k] = v[k] * gx + v[4 + k] * gy + v[8 + k] * gz;
        }
    });
    return {g_means, g_quats, g_scales};
}

// ---------------------------------------------------------------------------------------------------
// Binning: the visible Gaussians (radius > 0) sorted by depth, and for every 8x8 tile the Gaussians whose
// cut-off square touches it, front to back (the same rectangles as rasterize.py `tile_lists`).

struct Bins {
    std::vector<int64_t> offsets;  // [tiles + 1] start of each tile's list in `entries`
    std::vector<int32_t> entries;  // Gaussian indices, tile by tile, front to back
};

template <typename T>
Bins bin_gaussians(const T* means2d, const T* depths, const T* radii, int64_t n, int tiles_x, int tiles_y) {
    std::vector<int32_t> order;
    order.reserve(n);
    for (int64_t i = 0; i < n; ++i)
        if (radii[i] > 0) order.push_back(static_cast<int32_t>(i));
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return depths[a] < depths[b]; });
    const int64_t m = static_cast<int64_t>(order.size());
    std::vector<int32_t> rect(4 * m);  // x0, y0, x1, y1 (inclusive; empty when x1 < x0 or y1 < y0)
    for (int64_t k = 0; k < m; ++k) {
        const int32_t g = order[k];
        const T r = radii[g];
        const int lx = static_cast<int>(std::floor((means2d[2 * g] - r) / T(TILE)));
        const int ly = static_cast<int>(std::floor((means2d[2 * g + 1] - r) / T(TILE)));
        const int hx = static_cast<int>(std::floor((means2d[2 * g] + r) / T(TILE)));
        const int hy = static_cast<int>(std::floor((means2d[2 * g + 1] + r) / T(TILE)));
        rect[4 * k] = std::min(std::max(lx, 0), tiles_x);
        rect[4 * k + 1] = std::min(std::max(ly, 0), tiles_y);
        rect[4 * k + 2] = std::min(std::max(hx, -1), tiles_x - 1);
        rect[4 * k + 3] = std::min(std::max(hy, -1), tiles_y - 1);
    }
    const int64_t n_tiles = int64_t(tiles_x) * tiles_y;
    Bins bins;
    bins.offsets.assign(n_tiles + 1, 0);
    for (int64_t k = 0; k < m; ++k)  // count per tile
        for (int ty = rect[4 * k + 1]; ty <= rect[4 * k + 3]; ++ty)
            for (int tx = rect[4 * k]; tx <= rect[4 * k + 2]; ++tx) ++bins.offsets[int64_t(ty) * tiles_x + tx + 1];
    std::partial_sum(bins.offsets.begin(), bins.offsets.end(), bins.offsets.begin());
    bins.entries.resize(bins.offsets[n_tiles]);
    std::vector<int64_t> fill(bins.offsets.begin(), bins.offsets.end() - 1);
    for (int64_t k = 0; k < m; ++k)  // in depth order, so each tile's list is front to back
        for (int ty = rect[4 * k + 1]; ty <= rect[4 * k + 3]; ++ty)
            for (int tx = rect[4 * k]; tx <= rect[4 * k + 2]; ++tx) bins.entries[fill[int64_t(ty) * tiles_x + tx]++] = order[k];
    return bins;
}

// The Gaussian's value exp(power) at pixel offset (dx, dy), power in rasterize.py's order of operations.
// The power is floored at -30: any alpha below e^-30 is far under ALPHA_MIN and skipped either way (no value
// or gradient changes), and the floor keeps the products of the vector loops out of float's subnormal range,
// where x86 arithmetic is some 100x slower.
constexpr double POWER_MIN = -30.0;

template <typename T>
inline T gauss_power(T ca, T cb, T cc, T dx, T dy) {
    return T(-0.5) * (ca * (dx * dx) + cc * (dy * dy)) - (cb * dx) * dy;
}

template <typename T>
inline T gauss_value(T ca, T cb, T cc, T dx, T dy) {
    return exp_approx(max_v(gauss_power(ca, cb, cc, dx, dy), T(POWER_MIN)));
}

// ---------------------------------------------------------------------------------------------------
// composite_forward: front-to-back compositing, tile by tile in parallel. Per pixel it keeps the final
// transmittance and how many entries of its tile's list it went through (`last`), for the backward.
//
// Returns image [H,W,C], alpha [H,W] (= 1 - final transmittance), t_final [H,W], last [H,W] (int32),
// offsets [tiles + 1] (int64), entries [sum of the lists] (int32).

std::vector<torch::Tensor> composite_forward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor depths,
                                             torch::Tensor radii, torch::Tensor opacities, torch::Tensor colors,
                                             torch::Tensor background, int64_t width, int64_t height) {
    const int64_t n = means2d.size(0), nc = colors.size(1);
    const int tiles_x = static_cast<int>((width + TILE - 1) / TILE), tiles_y = static_cast<int>((height + TILE - 1) / TILE);
    const int64_t n_tiles = int64_t(tiles_x) * tiles_y;
    auto opts = colors.options();
    auto image = torch::empty({height, width, nc}, opts);
    auto alpha = torch::empty({height, width}, opts);
    auto t_final = torch::empty({height, width}, opts);
    auto last = torch::empty({height, width}, opts.dtype(torch::kInt32));
    torch::Tensor offsets, entries;
    dispatch(colors.scalar_type(), [&](auto tag) {
        using scalar_t = decltype(tag);
        using T = scalar_t;
        const T *m2 = means2d.data_ptr<T>(), *co = conics.data_ptr<T>(), *op = opacities.data_ptr<T>();
        const T *cl = colors.data_ptr<T>(), *bg = background.data_ptr<T>();
        Bins bins = bin_gaussians(m2, depths.data_ptr<T>(), radii.data_ptr<T>(), n, tiles_x, tiles_y);
        T *img = image.data_ptr<T>(), *alp = alpha.data_ptr<T>(), *tf = t_final.data_ptr<T>();
        int32_t* lst = last.data_ptr<int32_t>();
        const T amin = T(ALPHA_MIN), amax = T(ALPHA_MAX), tmin = T(T_MIN);
#pragma omp parallel num_threads(num_threads())
        {
            // per-tile state, pixel-major so that the loops over the 64 pixels vectorise
            alignas(64) T px[PIX], py[PIX], trans[PIX], w[PIX];
            alignas(64) int32_t done[PIX], cnt[PIX];
            std::vector<T> acc(PIX * nc);  // [C][PIX] colour so far
#pragma omp for schedule(dynamic, 4)
            for (int64_t tile = 0; tile < n_tiles; ++tile) {
                const int x0 = static_cast<int>(tile % tiles_x) * TILE, y0 = static_cast<int>(tile / tiles_x) * TILE;
                int n_done = 0;
                for (int p = 0; p < PIX; ++p) {
                    const int x = x0 + p % TILE, y = y0 + p / TILE;
                    px[p] = T(x) + T(0.5);
                    py[p] = T(y) + T(0.5);
                    trans[p] = T(1);
                    cnt[p] = 0;
                    done[p] = (x >= width || y >= height);  // padding pixels never composite
                    n_done += done[p];
                }
                std::fill(acc.begin(), acc.end(), T(0));
                const int64_t begin = bins.offsets[tile], end = bins.offsets[tile + 1];
                // Gaussians front to back; the tile stops as soon as every pixel has terminated
                for (int64_t k = begin; k < end && n_done < PIX; ++k) {
                    const int32_t g = bins.entries[k];
                    const T mx = m2[2 * g], my = m2[2 * g + 1];
                    const T ca = co[3 * g], cb = co[3 * g + 1], cc = co[3 * g + 2], o = op[g];
                    const int32_t step = static_cast<int32_t>(k - begin + 1);
                    int stopped = 0;
#pragma omp simd reduction(+ : stopped)
                    for (int p = 0; p < PIX; ++p) {
                        // masks as int32 and the cut-off tested before the clamp (the same test, as
                        // ALPHA_MAX > ALPHA_MIN): both keep the loop vectorisable
                        const T og = o * gauss_value(ca, cb, cc, px[p] - mx, py[p] - my);
                        const T a = min_v(og, amax);
                        const T t = trans[p];
                        const T next = t * (T(1) - a);
                        const int32_t live = int32_t(done[p] == 0) & int32_t(og >= amin);
                        const int32_t stop = live & int32_t(next < tmin);  // would pass the floor: end here
                        const int32_t use = live & int32_t(next >= tmin);
                        w[p] = use ? a * t : T(0);
                        trans[p] = use ? next : t;
                        cnt[p] = use ? step : cnt[p];
                        done[p] |= stop;
                        stopped += stop;
                    }
                    n_done += stopped;
                    for (int64_t c = 0; c < nc; ++c) {
                        const T col = cl[g * nc + c];
                        T* ac = acc.data() + c * PIX;
#pragma omp simd
                        for (int p = 0; p < PIX; ++p) ac[p] += w[p] * col;
                    }
                }
                for (int p = 0; p < PIX; ++p) {
                    const int x = x0 + p % TILE, y = y0 + p / TILE;
                    if (x >= width || y >= height) continue;
                    const int64_t pix = int64_t(y) * width + x;
                    for (int64_t c = 0; c < nc; ++c) img[pix * nc + c] = acc[c * PIX + p] + trans[p] * bg[c];
                    alp[pix] = T(1) - trans[p];
                    tf[pix] = trans[p];
                    lst[pix] = cnt[p];
                }
            }
        }
        offsets = torch::from_blob(bins.offsets.data(), {n_tiles + 1}, torch::kInt64).clone();
        entries = torch::from_blob(bins.entries.data(), {static_cast<int64_t>(bins.entries.size())}, torch::kInt32).clone();
    });
    return {image, alpha, t_final, last, offsets, entries};
}

// ---------------------------------------------------------------------------------------------------
// composite_backward: back to front through each pixel's composited Gaussians, recovering the
// transmittance before each one by division (T_k = T_{k+1} / (1 - alpha_k), from the saved final one).
// With S_k the colour composited behind k (background included),
//   d colour / d alpha_k = T_k c_k - S_k / (1 - alpha_k),   d alpha_out / d alpha_k = T_final / (1 - alpha_k).
// Each thread sums into its own per-Gaussian buffer; the buffers are added at the end.
//
// Returns d loss / d means2d [N,2], conics [N,3], opacities [N], colours [N,C].

std::vector<torch::Tensor> composite_backward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor opacities,
                                              torch::Tensor colors, torch::Tensor background, torch::Tensor t_final,
                                              torch::Tensor last, torch::Tensor offsets, torch::Tensor entries,
                                              torch::Tensor grad_image, torch::Tensor grad_alpha) {
    const int64_t n = means2d.size(0), nc = colors.size(1);
    const int64_t height = t_final.size(0), width = t_final.size(1);
    const int tiles_x = static_cast<int>((width + TILE - 1) / TILE);
    const int64_t n_tiles = offsets.size(0) - 1;
    const int64_t stride = 6 + nc;  // per Gaussian: means2d (2), conic (3), opacity, colours
    const int threads = num_threads();
    auto opts = colors.options();
    auto g_means2d = torch::zeros({n, 2}, opts), g_conics = torch::zeros({n, 3}, opts);
    auto g_opac = torch::zeros({n}, opts), g_colors = torch::zeros({n, nc}, opts);
    dispatch(colors.scalar_type(), [&](auto tag) {
        using scalar_t = decltype(tag);
        using T = scalar_t;
        const T *m2 = means2d.data_ptr<T>(), *co = conics.data_ptr<T>(), *op = opacities.data_ptr<T>();
        const T *cl = colors.data_ptr<T>(), *bg = background.data_ptr<T>(), *tf = t_final.data_ptr<T>();
        const T *gi = grad_image.data_ptr<T>(), *ga = grad_alpha.data_ptr<T>();
        const int32_t* lst = last.data_ptr<int32_t>();
        const int64_t* off = offsets.data_ptr<int64_t>();
        const int32_t* ent = entries.data_ptr<int32_t>();
        const T amin = T(ALPHA_MIN), amax = T(ALPHA_MAX);
        std::vector<std::vector<T>> buffers(threads);
#pragma omp parallel num_threads(threads)
        {
            std::vector<T>& buf = buffers[omp_get_thread_num()];
            buf.assign(n * stride, T(0));
            alignas(64) T px[PIX], py[PIX], trans[PIX], tfin[PIX], galpha[PIX];
            alignas(64) T av[PIX], gv[PIX], tk[PIX], dalpha[PIX], inv1m[PIX];  // alpha, G, T_k, d/dalpha, 1/(1-alpha)
            alignas(64) int32_t cnt[PIX], use[PIX], free[PIX];
            std::vector<T> behind(PIX * nc), gcol(PIX * nc);  // [C][PIX]: S_k and d loss / d pixel colour
#pragma omp for schedule(dynamic, 4)
            for (int64_t tile = 0; tile < n_tiles; ++tile) {
                const int64_t begin = off[tile];
                if (off[tile + 1] == begin) continue;
                const int x0 = static_cast<int>(tile % tiles_x) * TILE, y0 = static_cast<int>(tile / tiles_x) * TILE;
                int32_t max_cnt = 0;
                for (int p = 0; p < PIX; ++p) {
                    const int x = x0 + p % TILE, y = y0 + p / TILE;
                    px[p] = T(x) + T(0.5);
                    py[p] = T(y) + T(0.5);
                    const bool inside = x < width && y < height;
                    const int64_t pix = int64_t(y) * width + x;
                    cnt[p] = inside ? lst[pix] : 0;
                    tfin[p] = trans[p] = inside ? tf[pix] : T(1);
                    galpha[p] = inside ? ga[pix] : T(0);
                    for (int64_t c = 0; c < nc; ++c) {
                        gcol[c * PIX + p] = inside ? gi[pix * nc + c] : T(0);
                        behind[c * PIX + p] = tfin[p] * bg[c];
                    }
                    max_cnt = std::max(max_cnt, cnt[p]);
                }
                for (int32_t j = max_cnt - 1; j >= 0; --j) {
                    const int32_t g = ent[begin + j];
                    const T mx = m2[2 * g], my = m2[2 * g + 1];
                    const T ca = co[3 * g], cb = co[3 * g + 1], cc = co[3 * g + 2], o = op[g];
                    int any = 0;
#pragma omp simd reduction(+ : any)
                    for (int p = 0; p < PIX; ++p) {  // alpha as the forward computed it, and T before this one
                        const T gauss = gauss_value(ca, cb, cc, px[p] - mx, py[p] - my);
                        const T og = o * gauss;
                        const T a = min_v(og, amax);
                        const int32_t u = int32_t(j < cnt[p]) & int32_t(og >= amin);
                        const T inv = T(1) / (T(1) - a);
                        av[p] = a;
                        gv[p] = gauss;
                        use[p] = u;
                        inv1m[p] = inv;
                        tk[p] = u ? trans[p] * inv : trans[p];
                        trans[p] = tk[p];
                        dalpha[p] = u ? galpha[p] * tfin[p] * inv : T(0);
                        free[p] = u & int32_t(og <= amax);  // alpha = min(o G, ALPHA_MAX): held by the clamp
                        any += u;
                    }
                    if (!any) continue;
                    T* gb = buf.data() + int64_t(g) * stride;
                    for (int64_t c = 0; c < nc; ++c) {
                        const T col = cl[g * nc + c];
                        T* s = behind.data() + c * PIX;
                        const T* gc = gcol.data() + c * PIX;
                        T g_col = 0;
#pragma omp simd reduction(+ : g_col)
                        for (int p = 0; p < PIX; ++p) {
                            const T wk = use[p] ? av[p] * tk[p] : T(0);  // this Gaussian's weight
                            dalpha[p] += use[p] ? gc[p] * (tk[p] * col - s[p] * inv1m[p]) : T(0);
                            s[p] += wk * col;
                            g_col += wk * gc[p];
                        }
                        gb[6 + c] += g_col;
                    }
                    T g_mx = 0, g_my = 0, g_ca = 0, g_cb = 0, g_cc = 0, g_o = 0;
#pragma omp simd reduction(+ : g_mx, g_my, g_ca, g_cb, g_cc, g_o)
                    for (int p = 0; p < PIX; ++p) {
                        const T da = free[p] ? dalpha[p] : T(0);  // none where the clamp holds alpha
                        const T dpower = da * av[p];  // d alpha / d power = o G = alpha
                        const T dx = px[p] - mx, dy = py[p] - my;
                        g_o += da * gv[p];
                        g_ca += T(-0.5) * dx * dx * dpower;
                        g_cb += -dx * dy * dpower;
                        g_cc += T(-0.5) * dy * dy * dpower;
                        // power depends on the mean through d = pixel - mean
                        g_mx += (ca * dx + cb * dy) * dpower;
                        g_my += (cb * dx + cc * dy) * dpower;
                    }
                    gb[0] += g_mx; gb[1] += g_my; gb[2] += g_ca; gb[3] += g_cb; gb[4] += g_cc; gb[5] += g_o;
                }
            }
        }
        T *gm = g_means2d.data_ptr<T>(), *gco = g_conics.data_ptr<T>(), *go = g_opac.data_ptr<T>();
        T* gcl = g_colors.data_ptr<T>();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            T sum[64];  // stride <= 64 (checked below)
            std::fill(sum, sum + stride, T(0));
            for (int t = 0; t < threads; ++t) {
                const T* b = buffers[t].data() + i * stride;
                for (int64_t k = 0; k < stride; ++k) sum[k] += b[k];
            }
            gm[2 * i] = sum[0]; gm[2 * i + 1] = sum[1];
            gco[3 * i] = sum[2]; gco[3 * i + 1] = sum[3]; gco[3 * i + 2] = sum[4];
            go[i] = sum[5];
            for (int64_t c = 0; c < nc; ++c) gcl[i * nc + c] = sum[6 + c];
        }
    });
    return {g_means2d, g_conics, g_opac, g_colors};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "relight's fused CPU rasterizer: projection, binning and compositing, forward and backward";
    m.attr("TILE") = TILE;
    m.attr("NEAR") = NEAR;
    m.attr("BLUR") = BLUR;
    m.attr("ALPHA_MIN") = ALPHA_MIN;
    m.attr("ALPHA_MAX") = ALPHA_MAX;
    m.attr("T_MIN") = T_MIN;
    m.attr("MAX_CHANNELS") = 58;  // the reduction's per-Gaussian buffer holds 6 + C <= 64 values
    m.def("project_forward", &project_forward, "means2d, conics, depths, radii of the Gaussians");
    m.def("project_backward", &project_backward, "gradients of means, quats, scales from screen space");
    m.def("composite_forward", &composite_forward, "image, alpha, t_final, last, offsets, entries");
    m.def("composite_backward", &composite_backward, "gradients of means2d, conics, opacities, colours");
}
