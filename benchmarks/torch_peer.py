r"""The peer: the same pre-training step written plainly in PyTorch, timed alike.

    python -m benchmarks.torch_peer --method=simclr --batch_size=256 --json_out=peer.json

What benchmarks/gpu.sh runs beside ``benchmarks.throughput --synthetic`` to put a
ratio on cvrl_jax's speed. The usual fast PyTorch recipe: torchvision ResNet-50
in channels-last memory, bfloat16 autocast (float32 weights), ``torch.compile`` of
the networks, fused SGD with momentum. Heads, losses and target updates follow
cvrl_jax's ImageNet configs:

* ``simclr``: 3-layer head 2048-2048-128 with BN, NT-Xent (T = 0.1) over both
  views of the batch, BN statistics over both views together.
* ``moco_v2``: 2-layer head 2048-128 without BN; key encoder an EMA (m = 0.999)
  of the query encoder, queue of 65,536 keys, InfoNCE (T = 0.2), one view as
  queries, the other as keys (one GPU: no ShuffleBN needed).
* ``byol``: projector and predictor 4096-256 (BN on the hidden layer), EMA target
  (tau = 0.996), symmetric normalised MSE.

Each also trains a linear probe on the detached 2048-d features, as cvrl_jax's
methods do. Differences that favour the peer: SGD instead of LARS (SimCLR, BYOL),
no BN groups in MoCo. Inputs are random, resident on the device: the step alone.
FLOPs are counted by ``torch.utils.flop_counter`` on one eager step.
"""

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import report

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def mlp(dims: list[int], bn_last: bool) -> nn.Sequential:
  """Linear layers from dims[0] to dims[-1]; BN + ReLU between, BN after if bn_last."""
  layers = []
  for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
    last = i == len(dims) - 2
    layers.append(nn.Linear(a, b, bias=last and not bn_last))
    if not last:
      layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    elif bn_last:
      layers.append(nn.BatchNorm1d(b))
  return nn.Sequential(*layers)


def resnet50() -> nn.Module:
  try:
    import torchvision
  except RuntimeError:  # a CUDA torchvision beside a CPU torch: cvrl_jax's shim
    from cvrl_jax.tools.export import import_torchvision
    torchvision = import_torchvision()
  net = torchvision.models.resnet50()
  net.fc = nn.Identity()
  return net


class Encoder(nn.Module):
  """Backbone + head; returns (features, projection)."""

  def __init__(self, head: nn.Module):
    super().__init__()
    self.backbone, self.head = resnet50(), head

  def forward(self, x):
    h = self.backbone(x)
    return h, self.head(h)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
  """SimCLR's loss: z holds view 1 then view 2 of the same images."""
  z = F.normalize(z.float(), dim=1)
  n = z.shape[0] // 2
  logits = z @ z.T / temperature
  logits.fill_diagonal_(float("-inf"))
  targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
  return F.cross_entropy(logits, targets)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
  return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


class Peer:
  """One method: its modules, and ``loss(x1, x2, labels)`` with its side updates."""

  def __init__(self, method: str, device: torch.device, compile_: bool):
    self.method = method
    heads = {"simclr": lambda: mlp([2048, 2048, 2048, 128], bn_last=True),
             "moco_v2": lambda: mlp([2048, 2048, 128], bn_last=False),
             "byol": lambda: mlp([2048, 4096, 256], bn_last=False)}
    self.online = Encoder(heads[method]()).to(device, memory_format=torch.channels_last)
    self.probe = nn.Linear(2048, 1000).to(device)
    modules = [self.online, self.probe]
    self.target = None
    if method == "byol":
      self.predictor = mlp([256, 4096, 256], bn_last=False).to(device)
      modules.append(self.predictor)
    if method in ("moco_v2", "byol"):
      self.target = copy.deepcopy(self.online).requires_grad_(False)
      self.momentum = 0.999 if method == "moco_v2" else 0.996
    if method == "moco_v2":
      self.queue = F.normalize(torch.randn(65536, 128, device=device), dim=1)
      self.ptr = 0
    self.params = [p for m in modules for p in m.parameters()]
    self.eager_online, self.eager_target = self.online, self.target
    if compile_:
      self.online = torch.compile(self.online)
      self.target = self.target and torch.compile(self.target)

  def loss(self, x1, x2, labels):
    x = torch.cat([x1, x2])
    if self.method == "simclr":
      h, z = self.online(x)
      loss = nt_xent(z, 0.1)
    elif self.method == "moco_v2":
      h, q = self.online(x1)
      with torch.no_grad():
        _, k = self.target(x2)
        k = F.normalize(k.float(), dim=1)
      q = F.normalize(q.float(), dim=1)
      logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.T], dim=1) / 0.2
      loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
      n = len(k)
      self.queue[self.ptr:self.ptr + n] = k
      self.ptr = (self.ptr + n) % len(self.queue)
    else:
      h, z = self.online(x)
      p = self.predictor(z)
      with torch.no_grad():
        _, t = self.target(x)
      p1, p2 = p.chunk(2)
      t1, t2 = t.chunk(2)
      loss = byol_loss(p1, t2) + byol_loss(p2, t1)
    probe = F.cross_entropy(self.probe(h[:len(labels)].detach()), labels)
    return loss + probe

  @torch.no_grad()
  def update_target(self):
    if self.eager_target is not None:
      torch._foreach_lerp_(list(self.eager_target.parameters()),
                           list(self.eager_online.parameters()), 1 - self.momentum)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", choices=["simclr", "moco_v2", "byol"], default="simclr")
  parser.add_argument("--batch_size", type=int, default=256, help="images (2 views each)")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--no_compile", action="store_true")
  parser.add_argument("--json_out")
  args = parser.parse_args()

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.backends.cudnn.benchmark = True
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  peer = Peer(args.method, device, compile_=not args.no_compile)
  opt = torch.optim.SGD(peer.params, lr=0.1, momentum=0.9, weight_decay=1e-6,
                        fused=device.type == "cuda")
  shape = (args.batch_size, 3, args.image_size, args.image_size)
  x1, x2 = (torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
            for _ in range(2))
  labels = torch.randint(0, 1000, (args.batch_size,), device=device)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16)

  def step():
    with autocast:
      loss = peer.loss(x1, x2, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    peer.update_target()
    return loss

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  # FLOPs of one eager step (the compiled modules share the eager ones' weights).
  from torch.utils.flop_counter import FlopCounterMode
  compiled = peer.online, peer.target
  peer.online, peer.target = peer.eager_online, peer.eager_target
  with FlopCounterMode(display=False) as counter:
    step()
  flops = counter.get_total_flops()
  peer.online, peer.target = compiled

  start = time.perf_counter()
  step()
  sync()
  compile_s = time.perf_counter() - start
  for _ in range(2):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  sync()
  step_s = (time.perf_counter() - start) / args.steps

  kind = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
  peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
  result = {
      "date": time.strftime("%Y-%m-%d"), "method": args.method, "device": kind,
      "torch": torch.__version__, "compiled": not args.no_compile,
      "batch_size": args.batch_size, "image_size": args.image_size,
      "train_images_per_s": args.batch_size / step_s, "step_s": step_s,
      "first_step_s (compile)": compile_s, "step_gflops": flops / 1e9,
      "achieved_gflops_per_s": flops / step_s / 1e9,
      "mfu": flops / step_s / peak if peak else None,
      "peak_device_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
      "final_loss": loss.item(),
  }
  report.emit(result, args.json_out)


if __name__ == "__main__":
  main()
