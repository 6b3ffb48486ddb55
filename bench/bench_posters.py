"""Benchmark of poster production: throughput, memory, shots, faces kept whole.

Run by hand: ``python bench/bench_posters.py`` (add ``--copies N`` for a
longer input, ``--repeat N`` for the number of timed runs, best kept).
Everything runs pinned to one core (the process's CPU affinity is set to core
0, like ``taskset -c 0``; OpenCV and onnxruntime use one thread). Wall-clock
figures need an otherwise idle core; the CPU-time lines printed beside them
show what the process itself used.

1. Throughput: seconds of 720p video processed per wall-clock second, end to
   end (decode, shots, frame filters, detection, enhancement, crops,
   features, embeddings, JPEG writing, SQLite catalog), against a ceiling
   measured in the same run: bare decoding of the same file with
   ``cv2.VideoCapture``. The input is ``bigbuckbunny.mp4`` (1280x720, 25 fps,
   132 frames) concatenated ``--copies`` times into an MPEG-4 file; each
   copy is zoomed, shifted and every other one mirrored, so the copies are
   distinct shots whose frames the near-duplicate filter does not merge (a
   plain loop would let it discard most of the work).
2. Peak memory: ``ru_maxrss`` of the process after the run.
3. Shot detection F1 on ``bikes.mp4`` (cuts at 30, 76, 137, 187, 242) and on
   the concatenated input (a cut at every join).
4. Faces kept whole: over every candidate of the test videos and photos, the
   share of detected faces that lie wholly inside the poster.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyart.data import fetch  # noqa: E402
from keyart.settings import load_settings  # noqa: E402
from workers.frames import SamplingConfig, select_frames  # noqa: E402
from workers.pipeline import PipelineConfig, PosterPipeline  # noqa: E402
from workers.runner import JobRunner, video_event  # noqa: E402
from workers.source import VideoLimits, probe_video  # noqa: E402

CACHE = ROOT / ".cache" / "keyart"
BIKES_CUTS = [30, 76, 137, 187, 242]


def f1(found: list[int], truth: list[int]) -> float:
    hits = len(set(found) & set(truth))
    if hits == 0:
        return 1.0 if found == truth else 0.0
    precision, recall = hits / len(found), hits / len(truth)
    return 2 * precision * recall / (precision + recall)


def build_input(copies: int) -> tuple[Path, list[int]]:
    """Concatenate distinct variants of bigbuckbunny.mp4; return path and joins."""
    target = CACHE / "bench" / f"bunny_x{copies}.mp4"
    source = fetch("bigbuckbunny.mp4", CACHE)
    capture = cv2.VideoCapture(str(source))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    joins = [len(frames) * i for i in range(1, copies)]
    if target.is_file():
        return target, joins
    target.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height)
    )
    for copy in range(copies):
        zoom = 1.0 + 0.06 * (copy % 6)
        dx = (copy % 3 - 1) * 0.04 * width
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0, zoom)
        matrix[0, 2] += dx
        for frame in frames:
            out = cv2.warpAffine(frame, matrix, (width, height))
            writer.write(cv2.flip(out, 1) if copy % 2 else out)
    writer.release()
    return target, joins


def decode_ceiling(path: Path) -> tuple[int, float, float]:
    capture = cv2.VideoCapture(str(path))
    start, cpu = time.perf_counter(), time.process_time()
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, time.perf_counter() - start, time.process_time() - cpu


def faces_kept_whole(pipeline: PosterPipeline) -> tuple[int, int, int]:
    whole = total = candidates = 0
    for name, kind in (("bikes.mp4", "trailer"), ("bigbuckbunny.mp4", "other")):
        result = pipeline.run_video(fetch(name, CACHE), name, kind)
        for candidate in result.candidates:
            whole += candidate.faces_whole
            total += candidate.faces_total
            candidates += 1
    for name in ("astronaut.png", "franz-kafka.jpg", "chelsea.png"):
        image = cv2.imread(str(fetch(name, CACHE)))
        for candidate in pipeline.run_image(image, name):
            whole += candidate.faces_whole
            total += candidate.faces_total
            candidates += 1
    return whole, total, candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=12, help="Copies of the clip.")
    parser.add_argument(
        "--repeat", type=int, default=3, help="Runs of each timing; the best counts."
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    cv2.setNumThreads(1)

    path, joins = build_input(args.copies)
    info = probe_video(path, VideoLimits())
    print(f"input: {path.name} {info.width}x{info.height}, {info.frame_count} frames,")
    print(
        f"       {info.duration_s:.1f} s ({args.copies} variants of bigbuckbunny.mp4)"
    )

    # Ceiling: bare decode; each figure is the best of --repeat runs, the
    # least disturbed by other processes on the core.
    runs = [decode_ceiling(path) for _ in range(args.repeat)]
    frames = runs[0][0]
    decode_s = min(r[1] for r in runs)
    decode_cpu = min(r[2] for r in runs)
    ceiling = frames / info.fps / decode_s

    # Ours: end to end through the job runner, models loaded beforehand.
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            database_url=f"sqlite:///{folder}/catalog.db",
            poster_store=Path(folder) / "posters",
            data_cache=CACHE,
        )
        load_start = time.perf_counter()
        pipeline = PosterPipeline(PipelineConfig.from_settings(settings))
        runner = JobRunner(settings, pipeline=pipeline)
        load_s = time.perf_counter() - load_start
        run_s = run_cpu = float("inf")
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), time.process_time()
            outcome = runner.run(video_event(path, "bench", kind="feature"), "bench")
            run_s = min(run_s, time.perf_counter() - start)
            run_cpu = min(run_cpu, time.process_time() - cpu)
        runner.catalog.close()
    assert outcome.status == "done", outcome.reason
    speed = info.duration_s / run_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("\nthroughput, one core (video seconds per wall-clock second)")
    print(f"  ours, end to end     {speed:6.2f}x real time  ({run_s:.1f} s wall,")
    print(f"                       {len(outcome.rows)} candidates; target >= 3x)")
    print(f"  ceiling, bare decode {ceiling:6.2f}x real time  ({decode_s:.1f} s wall)")
    # On a shared machine other processes take turns on core 0: the CPU time
    # the process itself used gives the figure an idle core would show.
    print("  by CPU time (what an idle core gives):")
    print(
        f"    ours               {info.duration_s / run_cpu:6.2f}x  ({run_cpu:.1f} s)"
    )
    decode_x = info.duration_s / decode_cpu
    print(f"    bare decode        {decode_x:6.2f}x  ({decode_cpu:.1f} s)")
    print(f"  model loading        {load_s:6.2f} s once per worker (not in the figure)")
    print(f"peak memory (maxrss)   {peak_mb:6.0f} MB  (target <= 1536 MB)")

    bikes = select_frames(
        probe_video(fetch("bikes.mp4", CACHE), VideoLimits()), SamplingConfig()
    )
    joined = select_frames(info, SamplingConfig())
    print("\nshot detection F1 (exact frame)")
    print(f"  bikes.mp4            {f1(bikes.cuts, BIKES_CUTS):.3f}  cuts {bikes.cuts}")
    print(
        f"  concatenated input   {f1(joined.cuts, joins):.3f}  "
        f"({len(joined.cuts)} found, {len(joins)} joins)"
    )

    whole, total, candidates = faces_kept_whole(pipeline)
    share = whole / total if total else float("nan")
    print("\nfaces kept whole over all candidates of the test videos and photos")
    print(
        f"  {whole}/{total} = {100 * share:.1f}%  over {candidates} candidates "
        "(target 100%)"
    )


if __name__ == "__main__":
    main()
