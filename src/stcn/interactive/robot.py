"""The DAVIS-interactive scribble robot (davisinteractive 1.0.4's ``InteractiveScribblesRobot``),
rebuilt from its description (no code of the package), deterministic.

Given the ground truth and the prediction of one frame, for each label l = 0 (background), 1..K:

1. error mask E = (GT == l) & (pred != l); nothing when empty;
2. E is smoothed by a morphological opening (minimum then maximum filter, only pixels inside the
   image count) with the footprint ``X^2 + Y^2 <= r^2`` on the grid ``arange(-r, r + 1)``,
   r = min(kernel_size * sqrt(|E|) * 0.5, max_kernel_radius) (a float: the footprint is not centred on
   a pixel for fractional r); while the opening is empty, r *= 0.9 (as long as r > 1). r <= 1 from
   the start: E itself; every opening empty: no scribble for l;
3. skeleton = medial axis of the result padded by one pixel (:mod:`stcn.interactive.skeleton`,
   scikit-image <= 0.18 tie-breaking);
4. graph of the skeleton pixels (row-major numbering), edges between pixels at distance <= sqrt(2)
   weighted by the distance; per connected component, cycles are cut by removing the heaviest edge
   of each cycle networkx's ``find_cycle`` finds until none is left; components with fewer than
   ``min_nb_nodes`` nodes are dropped;
5. longest path of each tree: BFS from the component's first node to the farthest node v' (first
   in BFS order), then the farthest node u from v' (first in BFS order); the path runs from u to v';
6. the path's pixels (x, y) are the control points of a Bezier curve sampled at ``nb_points`` points
   (paths longer than that are kept as they are), divided by (W, H).

The output is a benchmark scribble dict: ``{'scribbles': [[] per frame, paths on the chosen frame],
'sequence': name}``; a path is ``{'path': [[x, y], ...], 'object_id': l, 'start_time', 'end_time'}``
(wall-clock stamps, meaningless). networkx provides the graph algorithms (same traversal orders as the
original).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import networkx as nx
import numpy as np
from scipy.special import comb

from stcn.interactive.skeleton import medial_axis

__all__ = ["ScribbleRobot", "bezier_curve", "error_skeleton", "skeleton_paths"]


def _footprint(radius: float) -> np.ndarray:
    """The robot's disk for a float radius: ``X^2 + Y^2 <= r^2`` on ``arange(-r, r + 1)`` (uint8)."""
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return (x ** 2 + y ** 2 <= radius ** 2).astype(np.uint8)


def _opening(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Minimum then maximum filter over the footprint, anchored at index shape // 2 (the rank filters'
    centre, also OpenCV's default anchor); pixels outside the image are ignored (OpenCV's default
    border for erode / dilate)."""
    eroded = cv2.erode(mask, footprint)
    return cv2.dilate(eroded, footprint)


def error_skeleton(error: np.ndarray, kernel_size: float = 0.2, max_kernel_radius: float = 16) -> np.ndarray:
    """Steps 2-3: an error mask (H, W) -> the (H, W) bool skeleton of its opening."""
    mask = error.astype(np.uint8)
    side = np.sqrt(np.sum(mask > 0))
    radius = min(kernel_size * side * 0.5, max_kernel_radius)
    opened = mask
    while radius > 1.0:
        opened = _opening(mask, _footprint(radius))
        if opened.any():
            break
        radius *= 0.9
    return medial_axis(np.pad(opened.astype(bool), 1))[1:-1, 1:-1]


def _skeleton_graph(skeleton: np.ndarray) -> tuple[nx.Graph, np.ndarray]:
    """Skeleton pixels -> (graph with nodes 0..n-1 in row-major order, (n, 2) int (x, y) points).

    Edges join pixels at distance <= sqrt(2), weight = the distance. The graph is scikit-learn's radius
    neighbours graph, as in the benchmark's robot: its KD-tree lists each pixel's neighbours in a
    data-dependent order that becomes the adjacency order, which decides which of two equally heavy
    edges a cycle loses (ascending order differs on 2 of the reference session's 13 paths).
    """
    from sklearn.neighbors import radius_neighbors_graph

    ys, xs = np.nonzero(skeleton)
    points = np.stack([xs, ys], axis=1)
    adjacency = radius_neighbors_graph(points, np.sqrt(2.0), mode="distance")
    return nx.from_scipy_sparse_array(adjacency), points


def _acyclic_components(graph: nx.Graph, min_nodes: int) -> list[nx.Graph]:
    trees = []
    for nodes in nx.connected_components(graph):
        g = graph.subgraph(nodes).copy()
        while True:
            try:
                cycle = nx.find_cycle(g)
            except nx.NetworkXNoCycle:
                break
            weights = [g.edges[u, v]["weight"] for u, v in cycle]
            g.remove_edge(*cycle[int(np.argmax(weights))])
        if g.number_of_nodes() >= min_nodes:
            trees.append(g)
    return trees


def _longest_path(tree: nx.Graph) -> list[int]:
    source = next(iter(tree.nodes))
    lengths = nx.single_source_shortest_path_length(tree, source)
    farthest = max(lengths, key=lengths.get)  # first maximum in BFS order
    paths = nx.single_source_shortest_path(tree, farthest)
    return max(paths.values(), key=len)[::-1]  # the benchmark's paths run from the far end to v'


def skeleton_paths(skeleton: np.ndarray, min_nb_nodes: int = 4) -> list[np.ndarray]:
    """Steps 4-5: a skeleton (H, W) -> the longest path of each tree as (n, 2) int (x, y) pixels."""
    if not skeleton.any():
        return []
    graph, points = _skeleton_graph(skeleton)
    return [points[_longest_path(t)] for t in _acyclic_components(graph, min_nb_nodes)]


def bezier_curve(points: np.ndarray, nb_points: int = 1000) -> np.ndarray:
    """Bezier curve with every point of ``points`` (n, 2) as a control point, sampled at ``nb_points``
    parameters linspace(0, 1) -> (nb_points, 2) float64; ``points`` unchanged (as float64) when
    n > nb_points."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n > nb_points:
        return points.copy()
    t = np.linspace(0.0, 1.0, num=nb_points)
    curve = np.zeros((nb_points, 2))
    for i in range(n):
        curve += np.outer(comb(n - 1, i) * t ** i * (1.0 - t) ** (n - 1 - i), points[i])
    return curve


@dataclass(frozen=True)
class ScribbleRobot:
    """The benchmark's robot with the evaluation service's parameters (kernel 0.2, radius <= 16,
    trees of >= 4 nodes, 1000 points per path)."""

    kernel_size: float = 0.2
    max_kernel_radius: float = 16
    min_nb_nodes: int = 4
    nb_points: int = 1000

    def frame_paths(self, gt: np.ndarray, pred: np.ndarray, num_objects: int) -> list[dict]:
        """Scribble paths of one frame: gt, pred (H, W) label maps -> [{'path', 'object_id', ...}]."""
        h, w = gt.shape
        out = []
        for label in range(num_objects + 1):
            start = time.time()
            error = (gt == label) & (pred != label)
            if not error.any():
                continue
            skeleton = error_skeleton(error, self.kernel_size, self.max_kernel_radius)
            curves = [bezier_curve(p, self.nb_points) for p in skeleton_paths(skeleton, self.min_nb_nodes)]
            end = time.time()
            for c in curves:
                c /= np.array([w, h], dtype=np.float64)
                out.append({"path": c.tolist(), "object_id": label, "start_time": start, "end_time": end})
        return out

    def __call__(self, sequence: str, gt: np.ndarray, pred: np.ndarray, num_objects: int,
                 frame: int | None = None) -> dict:
        """A scribble dict for the whole sequence: gt, pred (T, H, W) label maps; ``frame`` None = the
        frame with the lowest mean J over objects 1..K (first on ties)."""
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape or gt.ndim != 3:
            raise ValueError(f"gt {gt.shape} and pred {pred.shape} must be the same (T, H, W)")
        if frame is None:
            from stcn.interactive.protocol import batched_jaccard

            frame = int(np.argmin(batched_jaccard(gt, pred, num_objects).mean(axis=1)))
        scribbles: list[list[dict]] = [[] for _ in range(len(gt))]
        scribbles[frame] = self.frame_paths(gt[frame], pred[frame], num_objects)
        return {"scribbles": scribbles, "sequence": sequence}
