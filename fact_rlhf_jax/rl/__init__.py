"""Reinforcement learning pieces (pure functions): reward shaping, symbolic rewards, advantages, PPO losses."""
