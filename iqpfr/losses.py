"""Loss terms of stage I (SPEC 1.2, equations 7-10). Torch only.

The perceptual term is passed in as a module by the training code (LPIPS-VGG in the paper
profile; a documented substitute where its weights are unavailable), so this file has no
dependency on where weights come from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean(D(G(z)))."""
    return -fake_logits.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        scale: float = 0.8, eps: float = 1e-4) -> torch.Tensor:
    """VQGAN's adaptive weight (eq. 10), measured on the generator's last layer:

        lambda_adv = scale * clamp(||grad L_rec|| / (||grad L_gan|| + eps), 0, 1)

    The clamp to [0, 1] follows SPEC 1.2. Returned detached (it is a weight, not a loss).
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (scale * (g_rec.norm() / (g_gan.norm() + eps)).clamp(0.0, 1.0)).detach()


def vq_total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Batch mean of codebook + commitment terms (each per-sample (B,), H's already gated)."""
    return (terms["codebook"] + terms["commitment"]).mean()


# ----------------------------------------------------------------------------------------------
# SSIM on luma (Wang et al. 2004), the offline perceptual term of the default profile

LUMA = (0.299, 0.587, 0.114)  # BT.601 weights (the Y of YIQ)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian window (size,); its outer product is MATLAB's fspecial('gaussian')."""
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-k * k / (2 * sigma * sigma))
    return (g / g.sum()).float()


def ssim_luma(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per image on the 8-bit luma of x, y (B, 3, H, W) in [0, 1] -> (B,), differentiable in x and y.

    The standard definition: luma Y = 0.299 R + 0.587 G + 0.114 B on the 0-255 scale, rounded to
    integers with a straight-through gradient (MATLAB reads 8-bit images), an 11 x 11 Gaussian window
    of sigma 1.5 over the valid region, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, and the contrast-
    structure term clamped at 0. This is the value pyiqa's "ssim" metric returns (a test checks it);
    pyiqa computes it in float64 with a 2-D window, which made it about a tenth of a default stage-I
    step. Here the window is separable and the five local moments go through one depthwise
    convolution in the input's dtype.
    """
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    a, b = (x * w).sum(1, keepdim=True) * 255, (y * w).sum(1, keepdim=True) * 255  # (B, 1, H, W)
    a, b = a + (a.round() - a).detach() - 128, b + (b.round() - b).detach() - 128  # centred: float32 keeps the variances
    g = _gaussian_1d(size, sigma).to(x)
    maps = torch.cat([a, b, a * a, b * b, a * b], 1)  # (B, 5, H, W)
    maps = F.conv2d(maps, g.view(1, 1, 1, size).expand(5, 1, 1, size).contiguous(), groups=5)
    maps = F.conv2d(maps, g.view(1, 1, size, 1).expand(5, 1, size, 1).contiguous(), groups=5)  # (B, 5, H-10, W-10)
    mu_a, mu_b, aa, bb, ab = maps.unbind(1)  # local moments of the centred luma
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    mu_a, mu_b = mu_a + 128, mu_b + 128
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cs = F.relu((2 * cov + c2) / (var_a + var_b + c2))
    lum = (2 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
    return (lum * cs).flatten(1).mean(1)
