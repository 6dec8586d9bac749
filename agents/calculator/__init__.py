from agents.calculator.agent import Calculator

__all__ = ["Calculator"]
