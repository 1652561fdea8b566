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
