"""What the executor costs a process of several nodes: rclpy's SingleThreadedExecutor against its MultiThreadedExecutor.

The regression demo's closed loop in one process, as ``dli-perception demo --task regression`` and the
steering test run it: the scene camera (96x72 at 15 fps), a "perfect model" that answers each frame with
its true target point, reaction_node steering on those points (``cmd_vel`` at 20 Hz) and a subscriber
that drives the simulated robot. Each configuration spins the four nodes in a fresh context for
``--seconds`` after a warm-up, while the main thread samples the scene every 50 ms as the test does;
configurations alternate for ``--rounds``. Printed per run: CPU of the process in % of one core, the
rates delivered (commands, frames, samples; what was asked: 20, 15, 20 per second), and the mean angle
between the robot's heading and the target.

    .venv/bin/python benchmarks/executor.py [--seconds 5] [--rounds 3] [--threads 4]
"""

from __future__ import annotations

import argparse
import math
import statistics
import threading
import time


def run(threads: int, seconds: float, domain: int) -> dict:
    """One configuration: ``threads`` 0 is the SingleThreadedExecutor, N > 0 a MultiThreadedExecutor of N."""
    import rclpy
    from geometry_msgs.msg import PointStamped, Twist
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from dli_perception.core.contracts import stamp_ns_of
    from dli_perception.demo.robot import SimulatedRobot
    from dli_perception.demo.xy_scene import SceneCamera, TargetMotion
    from dli_perception.nodes.qos import EVENTS, SENSOR_DATA
    from dli_perception.nodes.reaction_node import ReactionNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    robot = SimulatedRobot()
    ns = f"executor_bench_{threads}"

    def pose(t: float):
        robot.advance(t)
        return robot.pose()

    scene = SceneCamera(context, ns, 96, 72, 15.0, 0, pose=pose, motion=TargetMotion(period_s=6.0))
    oracle = Node("oracle", context=context, namespace=ns)
    points = oracle.create_publisher(PointStamped, "xy", EVENTS)

    def answer(msg: Image) -> None:
        shown = scene.truth(stamp_ns_of(msg.header))
        if shown is not None:
            out = PointStamped(header=msg.header)
            out.point.x, out.point.y = shown.x, shown.y
            points.publish(out)

    oracle.create_subscription(Image, "image_raw", answer, SENSOR_DATA)
    steer = [Parameter("policy", value="steer"), Parameter("start_enabled", value=True)]
    reaction = ReactionNode(context=context, namespace=ns, parameter_overrides=steer)
    driver = Node("driver", context=context, namespace=ns)
    commands = [0]

    def drive(msg: Twist) -> None:
        robot.command(msg.linear.x, msg.angular.z, time.time())
        commands[0] += 1

    driver.create_subscription(Twist, "cmd_vel", drive, EVENTS)
    executor = (
        SingleThreadedExecutor(context=context) if threads == 0 else MultiThreadedExecutor(threads, context=context)
    )
    for node in (scene.node, oracle, reaction, driver):
        executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(2.0)
        scene.follow()
        cpu0, wall0, commands0, frames0 = time.process_time(), time.monotonic(), commands[0], scene.frames
        errors: list[float] = []
        while time.monotonic() - wall0 < seconds:
            time.sleep(0.05)
            errors.append(abs(scene.view(time.time()).relative_bearing))
        wall = time.monotonic() - wall0
        return {
            "executor": "single-threaded" if threads == 0 else f"multi-threaded x{threads}",
            "cpu_percent": round((time.process_time() - cpu0) / wall * 100, 1),
            "commands_per_s": round((commands[0] - commands0) / wall, 1),
            "frames_per_s": round((scene.frames - frames0) / wall, 1),
            "samples_per_s": round(len(errors) / wall, 1),
            "mean_heading_error_deg": round(math.degrees(statistics.fmean(errors)), 1),
        }
    finally:
        stop.set()
        spinner.join(timeout=5.0)
        executor.shutdown(timeout_sec=2.0)
        for node in (reaction, driver, oracle):
            node.destroy_node()
        scene.destroy()
        context.try_shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two executors (default 3)")
    parser.add_argument("--threads", type=int, default=4, help="threads of the multi-threaded executor (default 4)")
    args = parser.parse_args()
    domain = 90 + (time.time_ns() // 1000) % 10  # away from a test run's domain
    runs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for threads in (0, args.threads):
            result = run(threads, args.seconds, domain)
            runs.setdefault(result["executor"], []).append(result)
            print("  ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    print("medians:")
    for name, results in runs.items():
        keys = [k for k in results[0] if k != "executor"]
        print(f"  {name}: " + ", ".join(f"{k} {statistics.median(r[k] for r in results)}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
