"""Thin rclpy nodes wiring parameters, topics and services to the core."""
