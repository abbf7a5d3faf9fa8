"""The TAL hypernetwork: graph encoder + task conditioning + parameter decoder."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection

import torch
from torch import nn

from tal.arch.formats import OutputFormat, check_format, export_plan
from tal.arch.graph import build_graph
from tal.arch.specs import GPT2Spec, ViTSpec
from tal.hypernet.config import PRESETS, HypernetConfig
from tal.hypernet.decoder import LowRankMatrix, ParamDecoder
from tal.hypernet.encoder import GraphEncoder

GRAPH_CACHE_ENTRIES = 256  # encoder inputs kept per (spec, device); bounded for services


class TALHypernet(nn.Module):
    """Predicts every parameter of a ViT or GPT-2 spec, optionally conditioned on a task
    (config: the ``tal`` preset unless given).

    Parameters are created from ``config.init_seed``, so two fresh hypernetworks with the same
    config are identical.
    """

    def __init__(self, config: HypernetConfig | None = None) -> None:
        super().__init__()
        self.config = config or PRESETS["tal"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.init_seed)
            self.encoder = GraphEncoder(self.config.encoder)
            self.decoder = ParamDecoder(self.config.decoder, self.config.encoder.hidden)
        self._graph_tensors: OrderedDict[tuple[str, str], dict[str, torch.Tensor]] = OrderedDict()

    @property
    def device(self) -> torch.device:
        return self.decoder.kind_embedding.weight.device

    def set_token_table(self, table: torch.Tensor | None) -> None:
        """The text ancestry's token table ``(vocab, basis_size)``, the row basis of GPT-2's
        token embedding for that vocabulary (``DecoderConfig.token_basis``), or None. A
        learngene sets it from its text ancestry; it is not part of ``state_dict``."""
        self.decoder.set_token_table(table)

    @property
    def token_vocab_size(self) -> int | None:
        """The vocabulary the token table covers, or None without one."""
        table = self.decoder.token_table
        return None if table is None else int(table.shape[0])

    def encode(self, spec: ViTSpec | GPT2Spec, task: torch.Tensor | None = None) -> torch.Tensor:
        """Node embeddings ``(N, hidden)`` of the spec's graph."""
        key = (spec.spec_hash(), str(self.device))
        graph_tensors = self._graph_tensors.get(key)
        if graph_tensors is None:
            graph_tensors = build_graph(spec).tensors(self.device)
            self._graph_tensors[key] = graph_tensors
            if len(self._graph_tensors) > GRAPH_CACHE_ENTRIES:
                self._graph_tensors.popitem(last=False)
        else:
            self._graph_tensors.move_to_end(key)
        if task is not None:
            task = task.to(self.device, torch.float32)
        return self.encoder(graph_tensors, task)

    def forward(
        self,
        spec: ViTSpec | GPT2Spec,
        task: torch.Tensor | None = None,
        format: OutputFormat = "timm",
        dtype: torch.dtype = torch.float32,
        out: torch.Tensor | None = None,
        skip_matrices: Collection[str] = (),
    ) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` loadable with ``strict=True`` into the model of ``spec`` in
        ``format``.

        Args:
            spec: the target architecture.
            task: ``(task_dim,)`` task embedding, or None for the unconditioned prediction.
            format: ``"timm"`` or ``"hf"`` tensor names.
            dtype: output dtype.
            out: without autograd, the flat buffer every output is written into, in
                ``tal.hypernet.decoder.arena_pieces`` order (e.g. a blob's payload).
            skip_matrices: matrix slots left for the caller to write whole (a lift), not
                composed (``ParamDecoder.forward``).
        """
        plan = export_plan(spec, check_format(spec, format))
        nodes = self.encode(spec, task)
        return self.decoder(nodes, plan, dtype=dtype, out=out, skip_matrices=skip_matrices)

    def factored(
        self,
        spec: ViTSpec | GPT2Spec,
        task: torch.Tensor | None = None,
        format: OutputFormat = "hf",
        every_matrix: bool = False,
    ) -> dict[str, torch.Tensor | LowRankMatrix]:
        """Like :meth:`forward` (float32, differentiable), but token-indexed matrices decoded
        from a basis come back as :class:`LowRankMatrix` factors: training looks up rows and
        takes LM-head products through them instead of building a ``(vocab, width)`` matrix.
        With ``every_matrix`` every matrix does (``rows x r`` and ``r x cols``, ``r`` the
        basis size), which a lift resizes at a fraction of the dense cost."""
        plan = export_plan(spec, check_format(spec, format))
        return self.decoder(
            self.encode(spec, task),
            plan,
            factor_token_rows=True,
            factor_matrices=every_matrix,
        )
