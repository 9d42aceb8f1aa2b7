"""Classifier head (the paper's Eq. 5): y_hat = softmax(W h + b).

Binary and multi-class alike: ``num_classes`` >= 2 logits and a softmax; for a binary task the positive
class probability is ``probs[:, 1]``. Eq. 6's L2 term ``lambda * ||theta||^2`` is not added to the loss: it
is AdamW's decoupled weight decay (``weight_decay`` = lambda), as in the paper's Algorithm 1; see
:func:`mmxai_core.model.optim.parameter_groups`.
"""

from __future__ import annotations

from torch import Tensor, nn


class ClassifierHead(nn.Module):
    """``forward(x (B, in_dim)) -> logits (B, num_classes)``: LayerNorm (optional) -> Dropout -> Linear.

    Without the LayerNorm (``norm=False``) the logits are linear in the pooled embedding, as in a CNN's
    global-average-pooling head: when one slice or token dominates the pooled vector, a LayerNorm would
    make the class score nearly invariant to scaling its features, and gradient x activation maps
    (Grad-CAM++) would then miss exactly the region that decides (see :mod:`.image_encoder`).
    """

    def __init__(self, in_dim: int, num_classes: int, drop: float = 0.0, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if norm else nn.Identity()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.norm(x)))
