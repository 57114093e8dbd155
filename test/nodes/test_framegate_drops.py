"""Frames replaced in the middleware before the classifier's worker took them are counted."""

from __future__ import annotations

from dli_perception.nodes.framegate import DropCounter

GID_A = {"publisher_gid": {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"A" * 16}}
GID_B = {"publisher_gid": {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"B" * 16}}


def test_gaps_are_counted_per_publisher():
    c = DropCounter()
    assert c.skipped({"publication_sequence_number": 1, **GID_A}) == 0
    assert c.skipped({"publication_sequence_number": 5, **GID_A}) == 3
    assert c.skipped({"publication_sequence_number": 1, **GID_B}) == 0
    assert c.skipped({"publication_sequence_number": 6, **GID_A}) == 0
    assert c.skipped({"publication_sequence_number": 4, **GID_B}) == 2


def test_without_a_publisher_gid_the_frames_count_as_one_publishers():
    # Jazzy's rclpy reports the sequence number but no publisher gid.
    c = DropCounter()
    assert c.skipped({"publication_sequence_number": 1, "reception_sequence_number": None}) == 0
    assert c.skipped({"publication_sequence_number": 4}) == 2
    assert c.skipped({"publication_sequence_number": 2}) == 0  # went back: another publisher or a restart
    assert c.skipped({"publication_sequence_number": 3}) == 0


def test_unknown_sequence_numbers_count_nothing():
    c = DropCounter()
    assert c.skipped(None) == 0
    assert c.skipped({"publication_sequence_number": 0, **GID_A}) == 0
    assert c.skipped({"publication_sequence_number": None, **GID_A}) == 0
