import networkx as nx
import numpy as np

from tal.arch.graph import MAX_PATH_LENGTH, OpType, ParamKind, build_graph
from tal.arch.specs import GPT2Spec, ViTSpec

SMALL_VIT = ViTSpec(depth=2, embed_dim=32, num_heads=2, img_size=16, patch_size=4, num_classes=5)


def test_graph_follows_the_papers_format():
    graph = build_graph(SMALL_VIT)
    assert graph.node_feat.shape == (graph.num_nodes, 1)
    assert graph.node_info[0] == (0, "input", "input", None)
    assert graph.node_info[1] == (1, "patch_embed.proj", "conv", (32, 3, 4, 4))
    assert graph.edges.shape[1] == 3 and set(graph.edges[:, 2]) == {1}
    assert (graph.edges[:, 0] < graph.edges[:, 1]).all()  # topological order
    ops = [OpType(int(op)) for op in graph.node_feat[:, 0]]
    assert ops.count(OpType.MSA) == 2 and ops.count(OpType.SUM) == 4
    assert ops.count(OpType.LAYER_NORM) == 5


def test_attention_nodes_carry_their_head_count_and_head_width():
    for spec, heads, head_width in (
        (SMALL_VIT, 2, 16),
        (SMALL_VIT.model_copy(update={"num_heads": 8}), 8, 4),
        (GPT2Spec(n_layer=2, n_embd=48, n_head=3, vocab_size=11, n_positions=8), 3, 16),
    ):
        graph = build_graph(spec)
        attention = [node for node in graph.nodes if node.op == OpType.MSA]
        assert len(attention) == 2
        assert {node.features for node in attention} == {(heads, head_width, 0)}


def test_distances_match_breadth_first_search():
    graph = build_graph(GPT2Spec(n_layer=3, n_embd=16, n_head=2, vocab_size=11, n_positions=8))
    digraph = nx.DiGraph([(int(s), int(d)) for s, d, _ in graph.edges])
    far = MAX_PATH_LENGTH + 1
    expected = np.full((graph.num_nodes, graph.num_nodes), far)
    for source, lengths in nx.all_pairs_shortest_path_length(digraph):
        for target, length in lengths.items():
            expected[source, target] = min(length, far)
    assert (graph.distances == expected).all()
    assert (graph.in_degree == np.bincount(graph.edges[:, 1], minlength=graph.num_nodes)).all()


def test_graph_is_cached_and_slots_sit_on_their_ops():
    assert build_graph(SMALL_VIT) is build_graph(SMALL_VIT.model_copy())
    graph = build_graph(SMALL_VIT)
    for slot in graph.params:
        node = graph.nodes[slot.node]
        if slot.kind in (ParamKind.NORM_SCALE, ParamKind.NORM_SHIFT):
            assert node.op == OpType.LAYER_NORM
        if slot.name.endswith("qkv.weight"):
            assert node.op == OpType.LINEAR and (slot.rows, slot.cols) == (96, 32)


def test_gpt2_weights_are_transposed_conv1d():
    graph = build_graph(GPT2Spec(n_layer=1, n_embd=16, n_head=2, vocab_size=11, n_positions=8))
    slots = {slot.name: slot for slot in graph.params}
    c_fc = slots["transformer.h.0.mlp.c_fc.weight"]
    assert c_fc.transposed and c_fc.stored_shape == (16, 64) and (c_fc.rows, c_fc.cols) == (64, 16)
    assert "lm_head.weight" not in slots  # tied to wte
