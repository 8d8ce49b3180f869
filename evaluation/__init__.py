"""The paper's evaluation: protocols, metrics and the prompts they use (docs/method.md, "Evaluation")."""
