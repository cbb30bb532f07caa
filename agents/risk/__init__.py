"""The AI Risk Officer: VaR/CVaR, exposure and drawdown limits, and the kill switch."""
