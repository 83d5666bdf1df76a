package org.cartfhir.hapi;

import org.springframework.boot.context.properties.ConfigurationProperties;

/** The few knobs of this server, bound from {@code cartfhir.hapi.*} (see application.properties). */
@ConfigurationProperties(prefix = "cartfhir.hapi")
public class ServerSettings {

	/** Page size when a search gives no {@code _count}. */
	private int defaultPageSize = 20;

	/** Largest {@code _count} honoured. */
	private int maxPageSize = 1000;

	/** How often batch2 jobs (bulk export) advance; HAPI's default is one minute. */
	private long batchMaintenanceIntervalMs = 1000;

	/**
	 * Retry-After (seconds) sent while a bulk export is still running; HAPI sends 120.
	 * A negative value leaves HAPI's header alone.
	 */
	private int bulkRetryAfterSeconds = 1;

	/** Log one line per request. */
	private boolean requestLog = true;

	/** When set, the server exits soon after the process with this id has ended (0: never). */
	private long parentPid = 0;

	public int getDefaultPageSize() {
		return defaultPageSize;
	}

	public void setDefaultPageSize(int value) {
		defaultPageSize = value;
	}

	public int getMaxPageSize() {
		return maxPageSize;
	}

	public void setMaxPageSize(int value) {
		maxPageSize = value;
	}

	public long getBatchMaintenanceIntervalMs() {
		return batchMaintenanceIntervalMs;
	}

	public void setBatchMaintenanceIntervalMs(long value) {
		batchMaintenanceIntervalMs = value;
	}

	public int getBulkRetryAfterSeconds() {
		return bulkRetryAfterSeconds;
	}

	public void setBulkRetryAfterSeconds(int value) {
		bulkRetryAfterSeconds = value;
	}

	public boolean isRequestLog() {
		return requestLog;
	}

	public void setRequestLog(boolean value) {
		requestLog = value;
	}

	public long getParentPid() {
		return parentPid;
	}

	public void setParentPid(long value) {
		parentPid = value;
	}
}
